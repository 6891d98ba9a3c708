"""Scale-out: two worker hosts share only RabbitMQ, PostgreSQL and S3.

Each "host" is a `manage.py rundramatiq` started from a working directory of its own, with its own
var directory and TMPDIR, and files in one S3 bucket (a moto server on loopback). Which host did
what is read from PostgreSQL itself: a trigger the test adds records every change of a run's status
with the `application_name` of the connection that made it (each host's PGAPPNAME).
"""

import logging
import os
import shutil
import tempfile
import uuid

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection
from django.test import override_settings

from parseq.core.lifecycle import LOST_RUN_ERROR
from parseq.core.models import Run
from tests.helpers import (
    live_processes_with,
    make_parser,
    require,
    requires_postgresql_and_rabbitmq,
    shows_process_logs_on_failure,
    wait_until,
)
from tests.integration.test_rabbitmq_worker import RealWorkerTestCase
from tests.processes import kill_groups_of
from tests.storage.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server, moto_server_missing

logger = logging.getLogger(__name__)
TRANSITIONS = "test_scale_out_transitions"
QUICK_RUNS = 40


@requires_postgresql_and_rabbitmq
@require(moto_server_missing() is None, moto_server_missing())
class ScaleOutTests(RealWorkerTestCase):
    def setUp(self):
        super().setUp()
        # The S3 both hosts keep their files in, and this process reads them from
        self.s3 = S3Server()
        self.addCleanup(self.s3.close)
        self.s3.start()
        self.bucket = f"parseq-scale-{uuid.uuid4().hex[:8]}"
        self.s3.client().create_bucket(Bucket=self.bucket)
        bucket = {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": self.bucket,
                "endpoint_url": self.s3.endpoint_url,
                "region_name": REGION,
                "access_key": ACCESS_KEY,
                "secret_key": SECRET_KEY,
                "default_acl": None,
                "querystring_auth": False,
                "file_overwrite": True,
            },
        }
        storages = {**settings.STORAGES, "default": bucket}
        s3_override = override_settings(STORAGES=storages)
        s3_override.enable()
        self.addCleanup(s3_override.disable)
        self.record_transitions()
        self.hosts = {}

    def record_transitions(self):
        """Every change of a run's status, with the application_name of the connection that made it."""
        table, key = Run._meta.db_table, Run._meta.pk.column
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE TABLE {TRANSITIONS} (id serial PRIMARY KEY, run_id uuid, old text, new text, host text)"
            )
            cursor.execute(
                f"""CREATE FUNCTION {TRANSITIONS}_record() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.status IS DISTINCT FROM OLD.status THEN
                        INSERT INTO {TRANSITIONS} (run_id, old, new, host)
                        VALUES (NEW.{key}, OLD.status, NEW.status, current_setting('application_name'));
                    END IF;
                    RETURN NEW;
                END $$"""
            )
            cursor.execute(
                f"CREATE TRIGGER {TRANSITIONS} AFTER UPDATE ON {table}"
                f" FOR EACH ROW EXECUTE FUNCTION {TRANSITIONS}_record()"
            )
        self.addCleanup(self.drop_transitions)

    def drop_transitions(self):
        table = Run._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER IF EXISTS {TRANSITIONS} ON {table}")
            cursor.execute(f"DROP FUNCTION IF EXISTS {TRANSITIONS}_record()")
            cursor.execute(f"DROP TABLE IF EXISTS {TRANSITIONS}")

    def transitions(self, old, new):
        """(run id, host) of every change of a run from status `old` to `new`, in order."""
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT run_id, host FROM {TRANSITIONS} WHERE old = %s AND new = %s ORDER BY id", [old, new]
            )
            return cursor.fetchall()

    def start_host(self, name):
        """A worker host: its own working directory, var directory and TMPDIR; RabbitMQ, PostgreSQL, S3 shared."""
        host_dir = tempfile.mkdtemp(prefix=f"parseq-host-{name}-")
        self.addCleanup(shutil.rmtree, host_dir, ignore_errors=True)
        # Like /tmp, a sandbox running as its own user must reach its directory in the host's TMPDIR.
        os.chmod(host_dir, 0o755)
        tmp_dir = os.path.join(host_dir, "tmp")
        os.mkdir(tmp_dir)
        os.chmod(tmp_dir, 0o1777)
        var_dir = os.path.join(host_dir, "var")
        application_name = f"parseq-host-{name}-{uuid.uuid4().hex[:8]}"
        worker = self.start_worker(
            cwd=host_dir,
            env={
                "PARSEQ_VAR_DIR": var_dir,
                "TMPDIR": tmp_dir,
                "PGAPPNAME": application_name,
                "PARSEQ_S3_BUCKET": self.bucket,
                "PARSEQ_S3_ENDPOINT_URL": self.s3.endpoint_url,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_DEFAULT_REGION": REGION,
            },
        )
        self.hosts[application_name] = {
            "name": name,
            "worker": worker,
            "var_dir": var_dir,
            "log": self.process_logs[-1],
        }
        return application_name

    def start_two_hosts(self):
        names = [self.start_host("a"), self.start_host("b")]
        self.wait_for(lambda: self.hosts_alive() and self.consumers() >= 2, timeout=30, message="both hosts consuming")
        return names

    def hosts_alive(self):
        """True, or an AssertionError naming the host whose worker exited."""
        for host in self.hosts.values():
            if host["worker"].returncode is not None:
                raise AssertionError(f"host {host['name']} exited with code {host['worker'].returncode}")
        return True

    def log_of(self, host):
        with open(self.hosts[host]["log"], encoding="utf-8", errors="replace") as log:
            return log.read()

    def assert_no_outcome_dropped(self):
        """No host ran a run that had ended meanwhile (it would log that it dropped the outcome)."""
        for host in self.hosts:
            self.assertNotIn("was no longer", self.log_of(host), f"host {self.hosts[host]['name']}")

    @shows_process_logs_on_failure
    def test_two_hosts_share_forty_runs_each_run_once_with_its_file_in_the_shared_bucket(self):
        # Given two worker hosts, both consuming the runs queue
        host_a, host_b = self.start_two_hosts()
        # And 40 parsers, each returning a file that says which parser it came from
        source = """
            import os
            import time

            def parse():
                time.sleep(0.5)
                return {"tag.txt": os.environ["TAG"].encode()}
            """
        parsers = [
            make_parser(source, name=f"tag {number}", filename=f"tag_{number}.py", environment={"TAG": f"tag {number}"})
            for number in range(QUICK_RUNS)
        ]

        # When 40 runs are sent at once
        runs = [Run.objects.create(parser=parser, trigger=Run.Trigger.API) for parser in parsers]
        for run in runs:
            self.enqueue(run)

        # Then all 40 complete
        def all_completed():
            self.hosts_alive()
            others = Run.objects.filter(pk__in=[run.pk for run in runs]).exclude(status=Run.Status.COMPLETED)
            failed = list(others.exclude(status__in=Run.ACTIVE_STATUSES).values_list("pk", "status", "error"))
            if failed:
                raise AssertionError(f"runs that ended otherwise than completed: {failed}")
            return not others.exists()

        self.wait_for(all_completed, timeout=60, message="40 completed runs")

        # And each run was claimed once and completed once, none twice, and both hosts took a share of them
        claims = self.transitions(Run.Status.ENQUEUED, Run.Status.RUNNING)
        completions = self.transitions(Run.Status.RUNNING, Run.Status.COMPLETED)
        expected = sorted(run.pk for run in runs)
        self.assertEqual(sorted(run_id for run_id, _ in claims), expected)
        self.assertEqual(sorted(run_id for run_id, _ in completions), expected)
        share = {host: sum(1 for _, claimer in claims if claimer == host) for host in (host_a, host_b)}
        self.assertEqual(sum(share.values()), QUICK_RUNS, f"runs claimed by something else than the hosts: {claims}")
        logger.info("runs claimed by each host: %s", share)
        self.assertTrue(all(share.values()), f"a host ran none of the runs: {share}")
        # And a host completed what it claimed (the claim and the outcome come from the same execution)
        self.assertEqual(sorted(claims), sorted(completions))
        self.assert_no_outcome_dropped()

        # And each run's file is in the shared bucket, holding what its own parser returned
        for run, number in zip(runs, range(QUICK_RUNS), strict=True):
            run.refresh_from_db()
            self.assertEqual([entry["name"] for entry in run.files], ["tag.txt"])
            with default_storage.open(f"{run.pk}/tag.txt", "rb") as stored:
                self.assertEqual(stored.read(), f"tag {number}".encode())
        # And no host kept a file of its own: everything went to the bucket
        for host in self.hosts.values():
            media = os.path.join(host["var_dir"], "media")
            self.assertFalse(os.path.exists(media) and os.listdir(media), f"host {host['name']} stored files locally")

    @shows_process_logs_on_failure
    def test_a_host_killed_mid_run_leaves_its_run_with_no_attempt_left_in_error_and_the_other_host_goes_on(self):
        # Given two worker hosts, and a run (that may start once only) sleeping past its timeout on one of them
        self.start_two_hosts()
        marker = f"lost_{uuid.uuid4().hex}.py"  # the sandbox's display name, on its command line
        self.addCleanup(kill_groups_of, marker)
        sleeper = make_parser(
            "import time\n\ndef parse():\n    time.sleep(60)\n    return {}\n",
            name="sleeper",
            filename=marker,
            timeout=5,
            max_attempts=1,
        )
        lost = Run.objects.create(parser=sleeper, trigger=Run.Trigger.API)
        self.enqueue(lost)
        self.wait_for(
            lambda: (
                self.hosts_alive()
                and Run.objects.get(pk=lost.pk).status == Run.Status.RUNNING
                and live_processes_with(marker)
            ),
            timeout=30,
            message="the run to be running in a sandbox",
        )
        [(_, killed)] = self.transitions(Run.Status.ENQUEUED, Run.Status.RUNNING)
        [survivor] = [host for host in self.hosts if host != killed]

        # When the host running it is killed, its whole process group at once
        self.kill_worker(self.hosts[killed]["worker"])

        # Then its sandbox dies with it
        wait_until(lambda: not live_processes_with(marker), timeout=5, message="the orphaned sandbox to die")
        # And the other host goes on: runs sent now complete there
        quick = make_parser("def parse():\n    return {}\n", name="quick", filename="quick.py")
        later = [Run.objects.create(parser=quick, trigger=Run.Trigger.API) for _ in range(10)]
        for run in later:
            self.enqueue(run)
        survivor_worker = self.hosts[survivor]["worker"]
        self.wait_for(
            lambda: Run.objects.filter(pk__in=[run.pk for run in later], status=Run.Status.COMPLETED).count() == 10,
            timeout=30,
            message="the runs sent after the kill to complete",
            worker=survivor_worker,
        )
        # And the lost run does not stay running: the other host's reaper ends it in error once its lease lapsed
        ended = self.wait_for(
            lambda: Run.objects.filter(pk=lost.pk).exclude(status=Run.Status.RUNNING).first(),
            timeout=30,
            message="the lost run to end",
            worker=survivor_worker,
        )
        self.assertEqual((ended.status, ended.error), (Run.Status.ERROR, LOST_RUN_ERROR))
        self.assertEqual(self.transitions(Run.Status.RUNNING, Run.Status.ERROR), [(lost.pk, survivor)])
        # And it ran once only: its redelivered message found it claimed already, and no message is left
        claims = self.transitions(Run.Status.ENQUEUED, Run.Status.RUNNING)
        self.assertEqual([host for run_id, host in claims if run_id == lost.pk], [killed])
        self.assertEqual(sorted(run_id for run_id, host in claims if host == survivor), sorted(r.pk for r in later))
        self.wait_for(lambda: self.ready_messages() == 0, timeout=10, message="an empty queue", worker=survivor_worker)
        self.assertEqual(live_processes_with(marker), [])
