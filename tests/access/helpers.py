"""A password hasher that counts its hashes, and users and requests for the sign-in tests."""

from contextlib import contextmanager

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import MD5PasswordHasher
from django.test import override_settings

from parseq.access.authentication import verified_credentials

API = "/api/parsers/"
ADMIN_LOGIN = "/admin/login/"


class CountingHasher(MD5PasswordHasher):
    """MD5 (fast) that counts every hash it computes: verifying a password, or making one up for an unknown user."""

    algorithm = "counting_md5"
    hashes = 0

    def encode(self, password, salt):
        CountingHasher.hashes += 1
        return super().encode(password, salt)


COUNTING_PASSWORDS = override_settings(PASSWORD_HASHERS=["tests.access.helpers.CountingHasher"])


class Hashes:
    count = 0


@contextmanager
def counting_hashes():
    """`with counting_hashes() as hashes:`; then `hashes.count` is how many passwords were hashed inside."""
    counted = Hashes()
    before = CountingHasher.hashes
    try:
        yield counted
    finally:
        counted.count = CountingHasher.hashes - before


def make_user(username, password, **fields):
    """A superuser: whatever permissions the API asks for, only authentication decides its answer."""
    fields = {"is_staff": True, "is_superuser": True, **fields}
    return get_user_model().objects.create_user(username, password=password, **fields)


def forget_verified_credentials(test_case):
    """Each test starts with an empty Basic cache (it is the process's, and outlives a test's database)."""
    verified_credentials.clear()
    test_case.addCleanup(verified_credentials.clear)
