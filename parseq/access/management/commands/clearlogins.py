from django.core.management.base import BaseCommand, CommandError

from parseq.access import logins


class Command(BaseCommand):
    help = (
        "Forget failed sign-ins, which ends the lockouts they cause (README: Sign-ins): a user's (--user), "
        "an address's (--address), a user's from one address (both), or all of them (neither)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--user", metavar="USERNAME", help="Only this user's failures.")
        parser.add_argument("--address", metavar="IP", help="Only the failures from this address (IPv6: its /64).")

    def handle(self, *, user, address, **options):
        if address is not None:
            typed, address = address, logins.normalized_address(address)
            if not address:
                raise CommandError(f"Not an IP address: {typed!r}.")
        cleared = logins.clear(username=user, address=address)
        self.stdout.write(f"Cleared {cleared} failed sign-in{'' if cleared == 1 else 's'}.")
