"""Writes from other sites are refused before any authentication; clients that send no Origin are not affected."""

from django.contrib.auth import get_user_model
from django.test import TestCase, override_settings

from parseq.core.models import Parser
from tests.api.helpers import FAST_PASSWORDS, VALID, basic

CREATE = {"name": "planted", "script_text": VALID.decode(), "restricted": False}


@FAST_PASSWORDS
@override_settings(
    ALLOWED_HOSTS=["parseq.example.com", "testserver"],
    PUBLIC_URL="https://parseq.example.com",
    CSRF_TRUSTED_ORIGINS=["https://admin.example.org", "https://*.corp.example.net"],
)
class CrossSiteWriteGuardTests(TestCase):
    def setUp(self):
        get_user_model().objects.create_superuser("root", password="root-pass")

    def create(self, **headers):
        return self.client.post(
            "/api/parsers/", CREATE, content_type="application/json", **basic("root", "root-pass"), **headers
        )

    def test_a_write_from_another_origin_is_403_whatever_the_credentials_and_creates_nothing(self):
        for headers in [
            {"HTTP_ORIGIN": "https://evil.example"},
            {"HTTP_ORIGIN": "null"},
            {"HTTP_ORIGIN": "http://testserver:8080"},
            {"HTTP_ORIGIN": "https://testserver"},  # the test server speaks http
            {"HTTP_ORIGIN": "http://testserver/"},
            {"HTTP_ORIGIN": "https://corp.example.net.evil.example"},
            {"HTTP_SEC_FETCH_SITE": "cross-site"},
            {"HTTP_SEC_FETCH_SITE": "cross-site", "HTTP_ORIGIN": "http://testserver"},
            {"HTTP_SEC_FETCH_SITE": "same-site"},
        ]:
            with self.subTest(headers=headers):
                response = self.create(**headers)

                self.assertEqual(response.status_code, 403)
                self.assertEqual(response.json()["code"], "cross_site")
        self.assertFalse(Parser.objects.exists())

    def test_writes_from_parseqs_own_origins_and_from_clients_without_origin_go_through(self):
        for name, headers in [
            ("curl", {}),
            ("own", {"HTTP_ORIGIN": "http://testserver", "HTTP_SEC_FETCH_SITE": "same-origin"}),
            ("public", {"HTTP_ORIGIN": "https://parseq.example.com"}),
            ("trusted", {"HTTP_ORIGIN": "https://admin.example.org"}),
            ("wildcard", {"HTTP_ORIGIN": "https://tools.corp.example.net"}),
        ]:
            with self.subTest(origin=name):
                response = self.client.post(
                    "/api/parsers/",
                    {**CREATE, "name": name},
                    content_type="application/json",
                    **basic("root", "root-pass"),
                    **headers,
                )

                self.assertEqual(response.status_code, 201, response.content)

    def test_reading_from_another_origin_is_not_a_write_and_goes_through(self):
        response = self.client.get("/api/parsers/", HTTP_ORIGIN="https://evil.example", **basic("root", "root-pass"))

        self.assertEqual(response.status_code, 200)
