from django.db import models
from django.utils import timezone


class LoginFailure(models.Model):
    """A failed sign-in (admin form or API Basic): which user was tried, from where, and when.

    Kept in the database, not a process's memory, so that every web process on every host counts the same
    failures (README: Sign-ins). Rows older than PARSEQ_LOGIN_LOCKOUT_SECONDS are deleted as new ones come.
    """

    # As typed: it need not name a user (guessing names is an attack too); cut to the longest a user's name can be.
    username = models.CharField(max_length=150)
    # The client's address (an IPv6 client's /64 network), or empty when it is not known.
    address = models.CharField(max_length=64, blank=True)
    failed_time = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-failed_time", "-pk"]
        indexes = [
            models.Index(fields=["username", "failed_time"]),
            models.Index(fields=["address", "failed_time"]),
            models.Index(fields=["failed_time"]),
        ]

    def __str__(self):
        return f"{self.username} from {self.address or 'an unknown address'} at {self.failed_time:%Y-%m-%d %H:%M:%S}"
