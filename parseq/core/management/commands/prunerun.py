from django.core.management.base import BaseCommand, CommandError

from parseq.core import retention
from parseq.core.models import Parser


class Command(BaseCommand):
    help = (
        "Delete finished runs, with their files, beyond the retention limits (each parser's keep_last_runs and "
        "keep_days, else PARSEQ_KEEP_RUNS and PARSEQ_KEEP_DAYS; runs in error are kept "
        "PARSEQ_FAILED_RUNS_KEEP_FACTOR times longer). The active scheduler does this every PARSEQ_PRUNE_INTERVAL."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Only count the runs that would be deleted.")
        parser.add_argument(
            "--parser",
            dest="parser_names",
            metavar="NAME",
            nargs="+",
            action="extend",
            help="Only these parsers (default: all).",
        )

    def handle(self, *, dry_run, parser_names, **options):
        parsers = None
        if parser_names:
            parsers = list(Parser.objects.filter(name__in=parser_names))
            unknown = sorted(set(parser_names) - {parser.name for parser in parsers})
            if unknown:
                raise CommandError(f"No parser named {', '.join(unknown)}.")
        report = retention.prune_runs(parsers=parsers, dry_run=dry_run)
        self.stdout.write(str(report))
