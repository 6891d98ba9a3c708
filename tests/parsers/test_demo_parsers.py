"""The demo parsers, run as users' scripts are (the default sandbox, restricted mode) against test hosts.

Each service is imitated by a test host in a network namespace of its own, answering from
the fixtures in `fixtures/<service>/` (their README says which real endpoint they imitate).
"""

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

from django.conf import settings
from django.test import SimpleTestCase
from PIL import Image

import runner
from parseq.core.validation import allowed_modules, validate_script
from tests.helpers import require
from tests.hosts import CAN_MAKE_HOSTS, PORT, TestHost

PARSERS = Path(settings.BASE_DIR) / "parsers"
FIXTURES = Path(__file__).with_name("fixtures")


TEST_HOSTS = require(CAN_MAKE_HOSTS, "needs root and iproute2 to make a test host in a network namespace")


class DemoParserTests:
    """Mixed into each demo parser's test case; `script` names the file in parsers/, `service` its fixtures."""

    script = service = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.site = tempfile.mkdtemp(prefix="parseq-fixtures-")
        shutil.copytree(FIXTURES / cls.service, cls.site, dirs_exist_ok=True)
        cls.host = TestHost(cls.site, routes=True).__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.host.__exit__(None, None, None)
        shutil.rmtree(cls.site, ignore_errors=True)
        super().tearDownClass()

    def setUp(self):
        scratch = tempfile.TemporaryDirectory(prefix="parseq-demo-")
        self.addCleanup(scratch.cleanup)
        self.out_dir = os.path.join(scratch.name, "out")
        os.mkdir(self.out_dir)
        Path(self.site, "requests.log").unlink(missing_ok=True)

    def run_parser(self, **variables):
        return runner.run_script(
            str(PARSERS / self.script),
            self.out_dir,
            python=settings.SANDBOX_PYTHON,
            backend=runner.best_backend(),
            limits=runner.Limits(wall_time=60),
            timezone="UTC",
            variables=variables,
            network="internet",
            allowed_networks=[self.host.network],  # the test host's TEST-NET-2 address, refused otherwise
            extra_ports=[PORT],  # and its port, 8080
            restricted_modules=allowed_modules(),
        )

    def output(self, name):
        return Path(self.out_dir, name).read_bytes()

    def requests_made(self):
        log = Path(self.site, "requests.log")
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def assert_completed(self, outcome, files):
        self.assertEqual(outcome.status, runner.COMPLETED, outcome.error + outcome.log)
        self.assertEqual(sorted(os.listdir(self.out_dir)), sorted(files))

    def assert_failed_saying(self, outcome, *texts):
        self.assertEqual(outcome.status, runner.SCRIPT_ERROR, outcome.log)
        for text in texts:
            self.assertIn(text, outcome.error)

    def test_the_script_passes_the_upload_checks_in_restricted_mode(self):
        content = (PARSERS / self.script).read_bytes()

        problems = validate_script(filename=self.script, content=content, size=len(content), restricted=True)

        self.assertEqual(problems, [])
        self.assertIn("Environment variables", content.decode())


@TEST_HOSTS
class HttpCatTests(DemoParserTests, SimpleTestCase):
    script, service = "http_cat.py", "http_cat"

    def test_it_returns_the_picture_and_its_status(self):
        outcome = self.run_parser(HTTP_CAT_BASE_URL=self.host.url, HTTP_CAT_CODE="418")

        self.assert_completed(outcome, ["418.jpg", "status.json"])
        self.assertEqual(self.output("418.jpg"), (FIXTURES / "http_cat" / "418.jpg").read_bytes())
        self.assertEqual(Image.open(io.BytesIO(self.output("418.jpg"))).size, (120, 90))
        status = json.loads(self.output("status.json"))
        self.assertEqual(status, {"code": 418, "reason": "I'm a Teapot", "image": "418.jpg",
                                  "source": f"{self.host.url}/418.jpg"})  # fmt: skip
        self.assertTrue(self.requests_made()[0]["user_agent"].startswith("Parseq demo parser http_cat"))

    def test_a_server_error_ends_the_run_saying_which_request_failed(self):
        outcome = self.run_parser(HTTP_CAT_BASE_URL=f"{self.host.url}/broken", HTTP_CAT_CODE="418")

        self.assert_failed_saying(outcome, f"GET {self.host.url}/broken/418.jpg answered 503 Service Unavailable")

    def test_something_that_is_not_a_picture_ends_the_run_in_error(self):
        outcome = self.run_parser(HTTP_CAT_BASE_URL=f"{self.host.url}/html", HTTP_CAT_CODE="418")

        self.assert_failed_saying(outcome, "did not return a JPEG picture (Content-Type text/html)")


@TEST_HOSTS
class CbrRatesTests(DemoParserTests, SimpleTestCase):
    script, service = "cbr_rates.py", "cbr"

    def test_it_returns_the_days_rates_as_csv_and_json(self):
        outcome = self.run_parser(CBR_BASE_URL=f"{self.host.url}/scripts/XML_daily.asp", CBR_DATE="2026-11-28")

        self.assert_completed(outcome, ["rates.csv", "rates.json"])
        rows = list(csv.DictReader(io.StringIO(self.output("rates.csv").decode("utf-8"))))
        self.assertEqual([row["char_code"] for row in rows], ["AUD", "EUR", "JPY", "USD"])
        usd = next(row for row in rows if row["char_code"] == "USD")
        self.assertEqual((usd["name"], usd["value"], usd["unit_rate"]), ("Доллар США", "78.92", "78.92"))
        jpy = next(row for row in rows if row["char_code"] == "JPY")
        self.assertEqual((jpy["nominal"], jpy["value"], jpy["unit_rate"]), ("100", "51.1703", "0.511703"))
        document = json.loads(self.output("rates.json"))
        self.assertEqual((document["date"], document["currency"], len(document["rates"])), ("2026-11-28", "RUB", 4))
        self.assertEqual(self.requests_made()[0]["query"], {"date_req": "28/11/2026"})

    def test_a_server_error_ends_the_run_saying_which_request_failed(self):
        outcome = self.run_parser(CBR_BASE_URL=f"{self.host.url}/broken/XML_daily.asp")

        self.assert_failed_saying(outcome, f"GET {self.host.url}/broken/XML_daily.asp answered 502 Bad Gateway")

    def test_a_page_that_is_not_the_rates_ends_the_run_in_error(self):
        outcome = self.run_parser(CBR_BASE_URL=f"{self.host.url}/html/XML_daily.asp")

        self.assert_failed_saying(outcome, "returned XML without <ValCurs Date=...>: not the daily rates")


@TEST_HOSTS
class OpenMeteoTests(DemoParserTests, SimpleTestCase):
    script, service = "open_meteo.py", "open_meteo"

    def test_it_returns_the_forecast_as_csv_and_a_chart(self):
        outcome = self.run_parser(OPEN_METEO_BASE_URL=self.host.url)

        self.assert_completed(outcome, ["forecast.csv", "forecast.png"])
        lines = self.output("forecast.csv").decode().splitlines()
        self.assertEqual(lines[0], "date,temperature_max_c,temperature_min_c,precipitation_mm")
        self.assertEqual(lines[1:3], ["2026-11-28,-1.2,-6.3,0.0", "2026-11-29,0.4,-4.1,1.4"])
        self.assertEqual(len(lines), 8)
        chart = Image.open(io.BytesIO(self.output("forecast.png")))
        self.assertEqual((chart.format, chart.size), ("PNG", (900, 460)))
        colours = {colour for _, colour in chart.convert("RGB").getcolors(maxcolors=100_000)}
        self.assertTrue({(214, 69, 65), (52, 101, 164), (150, 196, 235)} <= colours, "both lines and the bars")

    def test_a_server_error_ends_the_run_saying_which_request_failed(self):
        outcome = self.run_parser(OPEN_METEO_BASE_URL=f"{self.host.url}/down")

        self.assert_failed_saying(outcome, f"GET {self.host.url}/down/v1/forecast?", "answered 500")

    def test_a_malformed_forecast_ends_the_run_in_error(self):
        outcome = self.run_parser(OPEN_METEO_BASE_URL=f"{self.host.url}/bad")

        self.assert_failed_saying(outcome, "daily.temperature_2m_min is missing or does not match the 7 dates")


@TEST_HOSTS
class EveWarsTests(DemoParserTests, SimpleTestCase):
    script, service = "eve_wars.py", "esi"
    NOW = "2026-11-28T12:00:00Z"  # the 24 hours before it: wars 760002 to 760006

    def test_it_reports_the_wars_declared_in_the_last_24_hours_with_names(self):
        outcome = self.run_parser(ESI_BASE_URL=f"{self.host.url}/latest", ESI_NOW=self.NOW, ESI_CONCURRENCY="4")

        self.assert_completed(outcome, ["report.md", "wars.csv", "wars.json"])
        rows = list(csv.DictReader(io.StringIO(self.output("wars.csv").decode())))
        self.assertEqual([row["id"] for row in rows], ["760006", "760005", "760004", "760003", "760002"])
        self.assertEqual(
            {key: rows[1][key] for key in ("aggressor", "defender", "mutual", "allies", "declared")},
            {
                "aggressor": "Pandemic Horde",
                "defender": "Republic Military School",
                "mutual": "True",
                "allies": "2",
                "declared": "2026-11-28T02:40:00+00:00",
            },
        )
        report = self.output("report.md").decode()
        self.assertIn("From 2026-11-27 12:00 to 2026-11-28 12:00 UTC: **5 war(s)**, 1 of them mutual.", report)
        self.assertIn(
            "| 2026-11-28 09:15 | Pator Tech School | Goonswarm Federation | 2026-11-29 09:15 | no | 0 |", report
        )
        self.assertEqual(len(json.loads(self.output("wars.json"))["wars"]), 5)
        asked = [(r["method"], r["path"], r["query"]) for r in self.requests_made()]
        self.assertIn(("GET", "/latest/wars/", {"max_war_id": "760002"}), asked)
        self.assertNotIn(("GET", "/latest/wars/759999/", {}), asked)
        self.assertEqual(sorted(json.loads(r["body"]) for r in self.requests_made() if r["method"] == "POST"),
                         [[98000001, 98000002, 98000003, 99000001, 99000002]])  # fmt: skip

    def test_esi_being_down_ends_the_run_saying_which_request_failed(self):
        outcome = self.run_parser(ESI_BASE_URL=f"{self.host.url}/down", ESI_NOW=self.NOW)

        self.assert_failed_saying(outcome, f"GET {self.host.url}/down/wars/ answered 503 Service Unavailable")

    def test_an_answer_that_is_not_a_list_of_wars_ends_the_run_in_error(self):
        outcome = self.run_parser(ESI_BASE_URL=f"{self.host.url}/bad", ESI_NOW=self.NOW)

        self.assert_failed_saying(outcome, f"GET {self.host.url}/bad/wars/ did not return a list of war ids")
