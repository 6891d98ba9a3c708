import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from parseq.database import bound_waits_of_this_service
from parseq.scheduling.keeper import ScheduleKeeper


class Command(BaseCommand):
    help = (
        "Fire the parsers' automatic runs. Start one on each of several hosts if you like: "
        "one is active, the others stand by and take over within seconds when it dies."
    )

    def handle(self, **options):
        if not settings.BROKER_URL:
            raise CommandError(
                "runscheduler needs PARSEQ_BROKER_URL (RabbitMQ): the runs it enqueued on an in-memory broker "
                "would never reach a worker. `make run` (runparseq) runs the scheduler in its own process."
            )
        bound_waits_of_this_service()
        stopping = threading.Event()
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signal_number, lambda *_: stopping.set())
        self.stdout.write("Scheduler starting: active if no other scheduler is, standby otherwise.")
        ScheduleKeeper().run(stopping)
        self.stdout.write("Scheduler stopped.")
