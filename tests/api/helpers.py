"""Users of each kind and their credentials, and runs with stored files, for the API tests."""

import base64
from importlib import import_module

from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
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
    """An Editor (who may also run and cancel) and a Viewer, in the groups the migrations made."""
    return user_in("Editors", "editor"), user_in("Viewers", "viewer")


def user_in(group, username, **fields):
    """A user whose only permissions are those of `group`; the password is the username + "-pass"."""
    if not Group.objects.filter(name=group).exists():
        # A TransactionTestCase (the browser's live server) empties every table, the migrations' groups too.
        import_module("parseq.core.migrations.0006_groups").create_groups(apps, schema_editor=None)
    user = get_user_model().objects.create_user(username, password=f"{username}-pass", **fields)
    user.groups.add(Group.objects.get(name=group))
    return user


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
