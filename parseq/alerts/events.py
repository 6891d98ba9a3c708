"""What the alerts' actors follow without the services knowing them."""

from django.dispatch import Signal

# Sent when an attempt of a webhook delivery is due, with `delivery_id`, `attempt` and `delay` (seconds, or
# None for now): the actors' module (parseq/alerts/tasks.py) hands it to the workers.
delivery_due = Signal()
