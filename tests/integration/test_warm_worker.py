"""A real `rundramatiq` worker on the subprocess backend starts runs warm, and takes its zygote down with it."""

import uuid

from parseq.core.models import Run
from tests.helpers import live_processes_with, make_parser, requires_postgresql_and_rabbitmq, wait_until
from tests.integration.test_rabbitmq_worker import RealWorkerTestCase
from tests.processes import kill_groups_of, processes_with


def zygotes_of(worker):
    """Pids of the zygotes whose parent is one of `worker`'s processes (the zygote leads a session of its own)."""
    workers = {process.pid for process in worker.members()}
    return [zygote.pid for zygote in processes_with("runner/sandbox/zygote.py") if zygote.ppid() in workers]


@requires_postgresql_and_rabbitmq
class WarmWorkerTests(RealWorkerTestCase):
    def test_runs_are_forked_from_the_workers_zygote_which_dies_with_the_worker_and_its_sandboxes(self):
        # Given a worker on the subprocess backend, where runs start warm unless PARSEQ_WARM_START=false
        worker = self.start_worker(processes=1, threads=2, env={"PARSEQ_SANDBOX": "subprocess"})
        parser = make_parser(
            """
            import bs4

            def parse():
                return {"text.txt": bs4.BeautifulSoup("<p>warm</p>", "html.parser").p.text.encode()}
            """,
            name="souper",
        )

        # When it runs a parser that uses the sandbox's libraries
        run = Run.objects.create(parser=parser, trigger=Run.Trigger.API)
        self.enqueue(run)
        run = self.wait_for(
            lambda: Run.objects.filter(pk=run.pk, status__in=[Run.Status.COMPLETED, Run.Status.ERROR]).first(),
            timeout=30,
            message="the run to finish",
            worker=worker,
        )

        # Then the run completed in a warm sandbox, forked from a zygote the worker started
        self.assertEqual(run.status, Run.Status.COMPLETED, run.error)
        self.assertEqual(run.parser_settings["sandbox"], "subprocess (warm start)")
        self.assertEqual([(file["name"], file["size"]) for file in run.files], [("text.txt", len("warm"))])
        self.assertEqual(len(zygotes_of(worker)), 1)
        zygote = zygotes_of(worker)[0]

        # When the worker is killed while a run sleeps in its sandbox
        marker = f"{uuid.uuid4().int % 10**6}.875"
        self.addCleanup(kill_groups_of, f"sleep {marker}")
        sleeper = make_parser(
            f"import subprocess\n\ndef parse():\n    subprocess.run(['sleep', '{marker}'])\n    return {{}}\n",
            name="sleeper",
            filename="sleeper.py",
        )
        self.enqueue(Run.objects.create(parser=sleeper, trigger=Run.Trigger.API))
        self.wait_for(
            lambda: live_processes_with(f"sleep {marker}"), timeout=30, message="the sleeper to run", worker=worker
        )
        self.kill_worker(worker)

        # Then the zygote and the sandbox are gone with it
        wait_until(lambda: not live_processes_with(f"sleep {marker}"), timeout=5, message="the sandbox to die")
        wait_until(
            lambda: zygote not in live_processes_with("runner/sandbox/zygote.py"),
            timeout=5,
            message="the zygote to exit",
        )
