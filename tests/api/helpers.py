"""Users of each kind and their credentials, and runs with stored files, for the API tests."""

import base64

from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import override_settings
from django.utils import timezone
from rest_framework.authtoken.models import Token

from parseq.core.models import Run

# Tests create users by the dozen: the slow password hash only makes them slow.
FAST_PASSWORDS = override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"])
VALID = b"import requests\n\ndef parse():\n    return {'a.txt': b'a'}\n"


def make_users():
    model = get_user_model()
    staff = model.objects.create_user("staff", password="staff-pass", is_staff=True)
    reader = model.objects.create_user("reader", password="reader-pass")
    return staff, reader


def basic(username, password):
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def token_header(user):
    return {"HTTP_AUTHORIZATION": f"Token {Token.objects.create(user=user).key}"}


def completed_run(parser, files, **fields):
    run = Run.objects.create(parser=parser, status=Run.Status.COMPLETED, finished_time=timezone.now(), **fields)
    for name, content in files.items():
        default_storage.save(f"{run.run_id}/{name}", ContentFile(content))
        run.files.append({"name": name, "size": len(content), "content_type": "application/octet-stream"})
    run.save()
    return run
