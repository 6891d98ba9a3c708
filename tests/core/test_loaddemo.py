"""`manage.py loaddemo`: the demo parsers from parsers/, once, with automatic runs off."""

from io import StringIO

from django.core.management import call_command
from django.test import TestCase

from parseq.core.models import Parser
from tests.helpers import TemporaryMediaMixin

DEMOS = ["cbr_rates", "eve_wars", "http_cat", "open_meteo"]


class LoadDemoTests(TemporaryMediaMixin, TestCase):
    def test_the_demo_parsers_are_added_once_switched_off_and_described_by_their_docstrings(self):
        first, second = StringIO(), StringIO()

        call_command("loaddemo", stdout=first)
        Parser.objects.filter(name="http_cat").update(description="mine now")
        call_command("loaddemo", stdout=second)

        parsers = Parser.objects.order_by("name")
        self.assertEqual([parser.name for parser in parsers], DEMOS)
        self.assertFalse(any(parser.enabled for parser in parsers))
        self.assertTrue(all(parser.restricted for parser in parsers))
        self.assertIn("Environment variables", Parser.objects.get(name="open_meteo").description)
        self.assertEqual(Parser.objects.get(name="http_cat").description, "mine now")
        self.assertIn("Added the demo parser eve_wars", first.getvalue())
        self.assertIn("Already there, left as they are: cbr_rates, eve_wars, http_cat, open_meteo.", second.getvalue())
