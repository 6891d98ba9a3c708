from django.db import models

from parseq.core.models import Parser, Run


class WebhookDelivery(models.Model):
    """One alert about a run's end, POSTed to its parser's webhook, and how its attempts went."""

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        DELIVERED = "delivered", "delivered"
        FAILED = "failed", "failed"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="webhook_deliveries")
    parser = models.ForeignKey(Parser, on_delete=models.CASCADE, related_name="webhook_deliveries")
    # The parser's URL when the run ended: editing the parser later does not redirect the alerts it already made.
    url = models.URLField(max_length=500)
    event = models.CharField(max_length=32)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    # Attempts of the current round: a manual retry starts a new one.
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_time = models.DateTimeField(auto_now_add=True, db_index=True)
    last_attempt_time = models.DateTimeField(null=True, blank=True)
    next_attempt_time = models.DateTimeField(null=True, blank=True)
    delivered_time = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_time", "-pk"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["parser", "-created_time"])]
        constraints = [models.UniqueConstraint(fields=["run", "event"], name="one_delivery_per_run_event")]

    def __str__(self):
        return f"{self.event} of run {self.run_id}"
