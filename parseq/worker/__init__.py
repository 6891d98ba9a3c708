"""The worker host's `rundramatiq`, sized by PARSEQ_WORKER_SLOTS (listed before django_dramatiq to replace theirs)."""
