"""Retention: finished runs beyond their parser's limits are deleted, and their files with them."""

import contextlib
import functools
import operator
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from parseq.core.models import Parser, Run

# Rows per DELETE: a huge history is neither loaded at once nor deleted in one long transaction.
DELETE_BATCH_SIZE = 500
# A count limit this high keeps everything; capping it keeps the SQL OFFSET within 64 bits.
UNREACHABLE_COUNT = 10**15

FAILED_STATUSES = (Run.Status.ERROR,)
# Every other status that is not active: completed, cancelled, skipped (and any later final status).
OTHER_FINISHED_STATUSES = tuple(
    status for status in Run.Status if status not in Run.ACTIVE_STATUSES and status not in FAILED_STATUSES
)


@dataclass(frozen=True)
class PruneReport:
    """What a cleanup deleted, or would delete on a dry run: runs per parser name, only parsers with some."""

    dry_run: bool
    deleted: dict[str, int] = field(default_factory=dict)

    @property
    def total(self):
        return sum(self.deleted.values())

    def __str__(self):
        verb = "Would delete" if self.dry_run else "Deleted"
        runs = "run" if self.total == 1 else "runs"
        if not self.total:
            return f"{verb} 0 runs."
        per_parser = ", ".join(f"{name} {count}" for name, count in self.deleted.items())
        return f"{verb} {self.total} {runs} (and their files): {per_parser}"


def prune_runs(*, now=None, parsers=None, dry_run=False):
    """Delete the finished runs that are beyond their parser's retention limits; returns a PruneReport.

    The rules:

    - Only finished runs are deleted (completed, error, skipped, cancelled); `enqueued` and
      `running` runs never are, nor counted.
    - A parser's limits are its own `keep_last_runs` (keep the newest N finished runs) and
      `keep_days` (keep finished runs younger than D days); where it has none, the global
      PARSEQ_KEEP_RUNS and PARSEQ_KEEP_DAYS. An unset limit does not limit; with neither,
      the parser's runs are kept forever.
    - Failures are kept longer: runs in `error` are ranked among the parser's runs in error
      only, and both limits are multiplied by PARSEQ_FAILED_RUNS_KEEP_FACTOR for them. The
      other finished runs are ranked among themselves, with the plain limits.
    - A run goes when it is beyond the count limit (newest first, by `created_time`) or when
      it was created longer ago than the age limit.

    Runs are deleted in batches of DELETE_BATCH_SIZE, each in its own transaction (unless
    the caller holds one); their files leave storage when each batch commits (the Run
    post_delete signal). Ages are measured from `now` (default: the current time);
    `parsers` limits the cleanup to those parsers (default: all); `dry_run` only counts.
    """
    now = now or timezone.now()
    if parsers is None:
        parsers = Parser.objects.only("pk", "name", "keep_last_runs", "keep_days")
    deleted = {}
    for parser in sorted(parsers, key=operator.attrgetter("name")):
        count = _prune_parser(parser=parser, now=now, dry_run=dry_run)
        if count:
            deleted[parser.name] = count
    return PruneReport(dry_run=dry_run, deleted=deleted)


def _prune_parser(*, parser, now, dry_run):
    keep_runs = parser.keep_last_runs if parser.keep_last_runs is not None else settings.KEEP_RUNS
    keep_days = parser.keep_days if parser.keep_days is not None else settings.KEEP_DAYS
    if keep_runs is None and keep_days is None:
        return 0
    factor = settings.FAILED_RUNS_KEEP_FACTOR
    groups = [(OTHER_FINISHED_STATUSES, 1), (FAILED_STATUSES, factor)]
    count = 0
    for statuses, multiplier in groups:
        runs = Run.objects.filter(parser=parser, status__in=statuses)
        doomed = _beyond_limits(
            runs,
            keep_runs=keep_runs * multiplier if keep_runs is not None else None,
            keep_days=keep_days * multiplier if keep_days is not None else None,
            now=now,
        )
        if doomed is not None:
            count += doomed.count() if dry_run else _delete_in_batches(doomed)
    return count


def _beyond_limits(runs, *, keep_runs, keep_days, now):
    """The runs among `runs` beyond the newest `keep_runs` or older than `keep_days`; None when none can be."""
    conditions = []
    if keep_runs is not None:
        # The newest run that is kept; the ones after it in the same order are beyond the count.
        # The run id breaks ties of created_time, so that the order (and the count) is exact.
        offset = min(keep_runs, UNREACHABLE_COUNT) - 1
        last_kept = runs.order_by("-created_time", "-pk").values_list("created_time", "pk")[offset : offset + 1]
        last_kept = next(iter(last_kept), None)
        if last_kept is not None:
            created, pk = last_kept
            conditions.append(Q(created_time__lt=created) | Q(created_time=created, pk__lt=pk))
    if keep_days is not None:
        # A limit reaching back before the year 1 is no limit: no run is that old.
        with contextlib.suppress(OverflowError):
            conditions.append(Q(created_time__lt=now - timedelta(days=keep_days)))
    if not conditions:
        return None
    return runs.filter(functools.reduce(operator.or_, conditions))


def _delete_in_batches(doomed):
    """Delete the runs of `doomed`, oldest first, a batch per transaction; returns how many were deleted."""
    deleted = 0
    oldest_first = doomed.order_by("created_time", "pk").values_list("pk", flat=True)
    while batch := list(oldest_first[:DELETE_BATCH_SIZE]):
        # Each row is loaded for its post_delete signal (which deletes its files); the log, up to
        # PARSEQ_LOG_LIMIT per run, is not needed there and would make a batch weigh hundreds of MiB.
        # Loading the rows through `doomed` again re-checks their status and the limits.
        _, per_model = doomed.filter(pk__in=batch).defer("log").delete()
        deleted += per_model.get(Run._meta.label, 0)
    return deleted
