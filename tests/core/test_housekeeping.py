"""Housekeeping: runs left `enqueued` without a message are sent again, once per wait, and say why they wait."""

from datetime import timedelta
from unittest import mock

import dramatiq
from django.test import TransactionTestCase, override_settings
from django.utils import timezone
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from parseq.core import housekeeping, services
from parseq.core.events import runs_enqueued
from parseq.core.middleware import DeadLetteredRuns
from parseq.core.models import Run
from parseq.core.tasks import execute_run
from tests.helpers import TemporaryMediaMixin, make_parser


@override_settings(RESEND_ENQUEUED_AFTER=300)
class ResendWaitingRunsTests(TemporaryMediaMixin, TransactionTestCase):
    def setUp(self):
        self.parser = make_parser("def parse():\n    return {}\n")
        self.sent = []
        runs_enqueued.connect(self.record_sent)
        self.addCleanup(runs_enqueued.disconnect, self.record_sent)

    def record_sent(self, sender, run_ids, **kwargs):
        self.sent.extend(run_ids)

    def run_waiting(self, seconds, status=Run.Status.ENQUEUED):
        run = Run.objects.create(parser=self.parser, status=status)
        Run.objects.filter(pk=run.pk).update(updated_time=timezone.now() - timedelta(seconds=seconds))
        return run

    def test_a_run_waiting_past_the_threshold_is_sent_again_and_then_waits_again(self):
        stale, fresh = self.run_waiting(301), self.run_waiting(299)
        running = self.run_waiting(3000, status=Run.Status.RUNNING)

        self.assertEqual(housekeeping.resend_waiting_runs(), 1)
        self.assertEqual(housekeeping.resend_waiting_runs(), 0)  # the next sweep, a moment later

        self.assertEqual(self.sent, [stale.run_id])
        self.assertNotIn(fresh.run_id, self.sent)
        self.assertNotIn(running.run_id, self.sent)

    def test_a_run_the_broker_refuses_to_take_again_stays_enqueued_noted_and_the_next_sweep_sends_it(self):
        stale = self.run_waiting(301)
        unreachable = RabbitmqBroker(url="amqp://guest:guest@127.0.0.1:1/%2F?connection_attempts=1")
        self.addCleanup(unreachable.close)

        with mock.patch.object(execute_run, "broker", unreachable), self.assertLogs("parseq.core.tasks", "WARNING"):
            housekeeping.resend_waiting_runs()

        stale.refresh_from_db()
        self.assertEqual(stale.status, Run.Status.ENQUEUED)
        self.assertTrue(stale.error.startswith("not sent yet: the broker did not take it ("), stale.error)
        # The next sweep, a moment later, does not wait the whole threshold again, and clears the note
        self.sent.clear()
        self.assertEqual(housekeeping.resend_waiting_runs(), 1)
        self.assertEqual(self.sent, [stale.run_id])
        self.assertEqual(Run.objects.get(pk=stale.pk).error, "")

    def test_a_scheduled_run_the_broker_refuses_waits_enqueued_noted_where_a_users_run_ends_in_error(self):
        unreachable = RabbitmqBroker(url="amqp://guest:guest@127.0.0.1:1/%2F?connection_attempts=1")
        self.addCleanup(unreachable.close)
        scheduled = Run(parser=self.parser, trigger=Run.Trigger.SCHEDULE, status=Run.Status.ENQUEUED)
        manual = Run(parser=self.parser, trigger=Run.Trigger.MANUAL, status=Run.Status.ENQUEUED)

        with mock.patch.object(execute_run, "broker", unreachable), self.assertLogs("parseq.core.tasks", "WARNING"):
            services.create_runs(runs=[scheduled], if_refused="wait")  # sent at once: no transaction to wait for
            services.create_runs(runs=[manual])

        scheduled.refresh_from_db()
        manual.refresh_from_db()
        self.assertEqual(scheduled.status, Run.Status.ENQUEUED)
        self.assertIn("the workers send it again as soon as it does", scheduled.error)
        self.assertEqual(manual.status, Run.Status.ERROR)
        self.assertIn("could not enqueue the run: the broker did not accept it", manual.error)

    def test_a_run_is_sent_again_each_time_it_has_waited_the_whole_threshold(self):
        stale = self.run_waiting(301)

        housekeeping.resend_waiting_runs()
        later = timezone.now() + timedelta(seconds=301)
        housekeeping.resend_waiting_runs(now=later)

        self.assertEqual(self.sent, [stale.run_id, stale.run_id])


@override_settings(RESEND_ENQUEUED_AFTER=300)
class DeadLetteredRunTests(TemporaryMediaMixin, TransactionTestCase):
    def test_a_dead_lettered_run_says_why_and_stays_enqueued_for_the_reaper_until_claimed(self):
        run = Run.objects.create(parser=make_parser("def parse():\n    return {}\n"), status=Run.Status.ENQUEUED)
        traceback = 'Traceback (most recent call last):\n  File "x"\nOperationalError: connection refused\n'
        message = dramatiq.Message(
            queue_name="runs",
            actor_name="execute_run",
            args=(str(run.run_id),),
            kwargs={},
            options={"retries": 6, "traceback": traceback},
        )

        with self.assertLogs("parseq.core.middleware", "ERROR") as logs:
            DeadLetteredRuns().after_nack(broker=None, message=message)

        run.refresh_from_db()
        self.assertEqual(run.status, Run.Status.ENQUEUED)
        self.assertEqual(
            run.error,
            "its message was dead-lettered after 6 attempts (OperationalError: connection refused); "
            "it is sent again after waiting 300 s",
        )
        self.assertIn(str(run.run_id), logs.output[0])
        self.assertEqual(Run.objects.claim(run_id=run.run_id, grace=5).pk, run.pk)
        run.refresh_from_db()
        self.assertEqual(run.error, "")
