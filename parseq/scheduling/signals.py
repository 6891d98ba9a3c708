"""Every saved or deleted parser is announced to the scheduler, whichever entry point changed it."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from parseq.core.models import Parser
from parseq.scheduling.changes import announce


@receiver(post_save, sender=Parser)
@receiver(post_delete, sender=Parser)
def announce_schedule_change(sender, instance, **kwargs):
    announce(parser_id=instance.pk)
