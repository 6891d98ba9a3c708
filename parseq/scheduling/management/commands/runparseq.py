import threading

import dramatiq
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from parseq.core import housekeeping
from parseq.database import bound_waits_of_this_service
from parseq.scheduling.keeper import ScheduleKeeper


class Command(BaseCommand):
    help = "Serve web, worker and scheduler in one process: the all-in-one mode of `make run`."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=settings.LOCAL_PORT)

    def handle(self, *, host, port, **options):
        bound_waits_of_this_service()
        if not settings.BROKER_URL:  # before this process's worker claims runs of its own
            rerun, failed = housekeeping.recover_runs_of_the_last_process()
            if rerun or failed:
                self.stdout.write(
                    f"Runs the last process was running: {rerun} run again, {failed} ended (no attempt left)."
                )
        worker = dramatiq.Worker(dramatiq.get_broker(), worker_threads=settings.INPROCESS_WORKER_THREADS)
        worker.start()
        stopping = threading.Event()
        scheduler = threading.Thread(target=ScheduleKeeper().run, args=(stopping,), name="parseq-scheduler")
        scheduler.start()
        try:
            if not settings.BROKER_URL:
                resent = housekeeping.resend_enqueued_runs()
                if resent:
                    self.stdout.write(f"Sent again {resent} run(s) left enqueued by the last in-memory broker.")
            broker = "RabbitMQ" if settings.BROKER_URL else "the in-memory broker"
            self.stdout.write(f"Parseq at http://{host}:{port}/admin/ with a worker on {broker} and a scheduler.")
            call_command("runserver", f"{host}:{port}", use_reloader=False, use_threading=True, insecure_serving=True)
        finally:
            stopping.set()
            scheduler.join(timeout=10)
            # Do not wait for long runs: their sandboxes die with this process, and the runs
            # run again (or, still enqueued, are sent again) when Parseq starts next.
            worker.stop(timeout=5000)
