"""Files in storage follow the rows that own them: deleting a parser or a run deletes its files."""

import logging

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from parseq.core.housekeeping import delete_stored_files
from parseq.core.models import Parser, Run

logger = logging.getLogger(__name__)


@receiver(post_delete, sender=Run)
def delete_run_files(sender, instance, **kwargs):
    names = instance.stored_names()
    transaction.on_commit(lambda: delete_stored_files(names=names))


@receiver(post_delete, sender=Parser)
def delete_parser_script(sender, instance, **kwargs):
    names = [instance.script.name] if instance.script else []
    transaction.on_commit(lambda: delete_stored_files(names=names))
