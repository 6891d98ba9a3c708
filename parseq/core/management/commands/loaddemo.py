from django.conf import settings
from django.core.management.base import BaseCommand

from parseq.core import services


class Command(BaseCommand):
    help = "Add the demo parsers from parsers/ (automatic runs off); those already there are left as they are."

    def add_arguments(self, parser):
        parser.add_argument("--directory", default=str(settings.BASE_DIR / "parsers"))

    def handle(self, *, directory, **options):
        added, present = services.load_demo_parsers(directory=directory)
        for name in added:
            self.stdout.write(f"Added the demo parser {name} (automatic runs off: use Run now).")
        if present:
            self.stdout.write(f"Already there, left as they are: {', '.join(present)}.")
