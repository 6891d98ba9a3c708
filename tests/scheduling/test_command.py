"""`manage.py runscheduler` refuses what would lose runs."""

from django.core.management import CommandError, call_command
from django.test import SimpleTestCase, override_settings


class RunSchedulerCommandTests(SimpleTestCase):
    @override_settings(BROKER_URL=None)
    def test_without_rabbitmq_it_refuses_to_start_and_says_why(self):
        with self.assertRaises(CommandError) as refused:
            call_command("runscheduler")

        self.assertIn("runscheduler needs PARSEQ_BROKER_URL (RabbitMQ)", str(refused.exception))
        self.assertIn("`make run` (runparseq) runs the scheduler in its own process", str(refused.exception))
