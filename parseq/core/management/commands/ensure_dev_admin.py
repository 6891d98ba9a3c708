from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Create the superuser admin/admin, in development mode (DEBUG=true) only."

    def handle(self, **options):
        if not settings.DEBUG:
            raise CommandError("refusing to create admin/admin: DEBUG is false (this is for development only)")
        users = get_user_model().objects
        if users.filter(username="admin").exists():
            self.stdout.write("The user admin exists already.")
            return
        users.create_superuser("admin", "admin@localhost", "admin")
        self.stdout.write("Created the superuser admin with the password admin.")
