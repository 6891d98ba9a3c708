"""Every API endpoint against every kind of user: exactly what each group's row of README: Permissions says."""

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.test import override_settings
from rest_framework.test import APITestCase

from parseq.core import audit
from parseq.core.models import AuditEntry, Parser, Run
from tests.api.helpers import FAST_PASSWORDS, VALID, completed_run, user_in
from tests.helpers import TemporaryMediaMixin, make_parser

SOURCE = "def parse():\n    return {}\n"
SECRET = "s3cr3t-value-1234"
WEBHOOK = "https://93.184.216.34/services/T0/B0/XYZ"  # public: checked when saved, never posted to

# What each kind of user may do: the permissions the migrations gave its group.
VIEW = {"view_parser", "view_run", "view_auditentry"}
OPERATE = VIEW | {"run_parser", "cancel_run"}
EDIT = OPERATE | {"add_parser", "change_parser", "delete_parser"}
EVERYTHING = EDIT | {"delete_run"}
ROLES = {
    "anonymous": set(),
    "staff without permissions": set(),
    "Viewer": VIEW,
    "Operator": OPERATE,
    "Editor": EDIT,
    "superuser": EVERYTHING,
}


@dataclass
class Endpoint:
    """One operation of the API, the permission it needs, and the answer it gives when allowed."""

    method: str
    path: str  # with {parser}, {run}, {queued}, {entry}
    needs: str
    allowed_status: int
    body: dict | None = None


ENDPOINTS = [
    # The root lists links only; it takes any permission of Parseq's (every group's includes view_parser).
    Endpoint("get", "/api/", "view_parser", 200),
    Endpoint("get", "/api/parsers/", "view_parser", 200),
    Endpoint("post", "/api/parsers/", "add_parser", 201, {"name": "new", "script_text": VALID.decode()}),
    Endpoint("get", "/api/parsers/{parser}/", "view_parser", 200),
    Endpoint("put", "/api/parsers/{parser}/", "change_parser", 200, {"name": "renamed", "description": "put"}),
    Endpoint("patch", "/api/parsers/{parser}/", "change_parser", 200, {"restricted": False}),
    Endpoint("delete", "/api/parsers/{parser}/", "delete_parser", 204),
    Endpoint("post", "/api/parsers/{parser}/run/", "run_parser", 202),
    Endpoint("get", "/api/parsers/{parser}/script/", "change_parser", 200),
    Endpoint("get", "/api/parsers/{parser}/environment/", "change_parser", 200),
    Endpoint("get", "/api/parsers/{parser}/audit/", "view_parser", 200),
    Endpoint("post", "/api/parsers/check/", "add_parser", 200, {"script_text": VALID.decode()}),
    Endpoint("post", "/api/parsers/{parser}/check/", "change_parser", 200, {"script_text": VALID.decode()}),
    Endpoint("get", "/api/runs/", "view_run", 200),
    Endpoint("get", "/api/runs/{run}/", "view_run", 200),
    Endpoint("get", "/api/runs/{run}/files/secret.txt", "view_run", 200),
    Endpoint("get", "/api/runs/{run}/archive.zip", "view_run", 200),
    Endpoint("get", "/api/runs/{run}/log", "view_run", 200),
    Endpoint("post", "/api/runs/{queued}/cancel/", "cancel_run", 200),
    Endpoint("get", "/api/audit/", "view_auditentry", 200),
    Endpoint("get", "/api/audit/{entry}/", "view_auditentry", 200),
]


@FAST_PASSWORDS
class EveryEndpointForEveryRoleTests(TemporaryMediaMixin, APITestCase):
    def setUp(self):
        model = get_user_model()
        self.users = {
            "anonymous": None,
            "staff without permissions": model.objects.create_user("staff", is_staff=True),
            "Viewer": user_in("Viewers", "viewer"),
            "Operator": user_in("Operators", "operator"),
            "Editor": user_in("Editors", "editor"),
            "superuser": model.objects.create_superuser("root", password="root-pass"),
        }

    def make_objects(self):
        """A parser with secrets, a completed run with a file, a queued run and an audit entry: fresh each time."""
        Parser.objects.all().delete()
        parser = make_parser(SOURCE, name="weather", environment={"API_KEY": SECRET}, webhook_url=WEBHOOK)
        run = completed_run(parser, {"secret.txt": b"a result"}, log="fetched\n")
        queued = Run.objects.create(parser=parser)
        entry = audit.record(user=None, action=AuditEntry.Action.CREATED, source="command", parser=parser)
        return {"parser": parser.pk, "run": run.run_id, "queued": queued.run_id, "entry": entry.pk}

    def state(self):
        """What a refused request must leave as it was."""
        parsers = list(Parser.objects.values_list("name", "description", "restricted", "enabled"))
        runs = sorted(Run.objects.values_list("run_id", "status"))
        return parsers, runs

    def test_each_role_gets_exactly_what_its_permissions_allow_and_a_refusal_changes_nothing(self):
        for role, permissions in ROLES.items():
            for endpoint in ENDPOINTS:
                with self.subTest(role=role, endpoint=f"{endpoint.method.upper()} {endpoint.path}"):
                    ids = self.make_objects()
                    before = self.state()
                    self.client.force_authenticate(self.users[role])

                    response = getattr(self.client, endpoint.method)(
                        endpoint.path.format(**ids), endpoint.body, format="json"
                    )

                    if endpoint.needs in permissions:
                        body = response.getvalue()  # a streamed one too, read to its end
                        self.assertEqual(response.status_code, endpoint.allowed_status, body[:300])
                    else:
                        self.assertEqual(response.status_code, 401 if role == "anonymous" else 403)
                        self.assertEqual(self.state(), before)
                        if role != "anonymous":
                            self.assertIn(f"core.{endpoint.needs}", response.json()["detail"])

    def test_only_those_who_may_change_a_parser_see_its_webhook_url_and_nobody_sees_values_in_it(self):
        parser = make_parser(SOURCE, name="weather", environment={"API_KEY": SECRET}, webhook_url=WEBHOOK)
        for role in ["Viewer", "Operator", "Editor", "superuser"]:
            with self.subTest(role=role):
                self.client.force_authenticate(self.users[role])

                detail = self.client.get(f"/api/parsers/{parser.pk}/").json()
                listed = self.client.get("/api/parsers/").json()["results"][0]

                may_change = role in ("Editor", "superuser")
                self.assertEqual(detail.get("webhook_url"), WEBHOOK if may_change else None)
                self.assertEqual("webhook_url" in listed, may_change)
                self.assertEqual(detail["environment"], {"API_KEY": "********"})
                self.assertNotIn(SECRET, str(detail) + str(listed))

    def test_options_offers_only_what_the_user_may_do_and_a_method_an_endpoint_lacks_is_405(self):
        parser = make_parser(SOURCE, name="weather")
        for role, offered in [("Viewer", False), ("Editor", True)]:
            with self.subTest(role=role):
                self.client.force_authenticate(self.users[role])

                options = self.client.options(f"/api/parsers/{parser.pk}/").json()

                self.assertEqual("PUT" in options.get("actions", {}), offered)
        self.client.force_authenticate(self.users["superuser"])
        self.assertEqual(self.client.get(f"/api/parsers/{parser.pk}/run/").status_code, 405)
        self.assertEqual(self.client.put("/api/audit/1/").status_code, 405)

    def test_an_editor_reads_the_values_of_the_environment_on_their_own_endpoint(self):
        parser = make_parser(SOURCE, name="weather", environment={"API_KEY": SECRET})
        self.client.force_authenticate(self.users["Editor"])

        response = self.client.get(f"/api/parsers/{parser.pk}/environment/")

        self.assertEqual(response.json(), {"API_KEY": SECRET})
        self.assertEqual(response["Cache-Control"], "no-store")

    def test_with_public_downloads_off_a_result_link_needs_view_run(self):
        parser = make_parser(SOURCE)
        run = completed_run(parser, {"a.txt": b"a"})
        link = f"/{run.run_id}/a.txt"
        with override_settings(PUBLIC_DOWNLOADS=False):
            for role, permissions in ROLES.items():
                with self.subTest(role=role):
                    self.client.force_authenticate(self.users[role])

                    status = self.client.get(link).status_code

                    expected = 200 if "view_run" in permissions else 401 if role == "anonymous" else 403
                    self.assertEqual(status, expected)
        self.client.force_authenticate(None)
        self.assertEqual(self.client.get(link).status_code, 200)  # public by default: the link is the capability


@FAST_PASSWORDS
class AuditTrailTests(TemporaryMediaMixin, APITestCase):
    def setUp(self):
        self.editor = user_in("Editors", "editor")
        self.client.force_authenticate(self.editor)

    def test_create_change_run_cancel_and_delete_are_recorded_with_who_and_which_fields_never_values(self):
        # Given a parser an editor created, changed, ran and cancelled a run of, then deleted
        created = self.client.post("/api/parsers/", {"name": "rates", "script_text": VALID.decode()}, format="json")
        parser_id = created.json()["id"]
        self.client.patch(
            f"/api/parsers/{parser_id}/",
            {"restricted": False, "environment": {"API_KEY": SECRET}, "webhook_url": WEBHOOK},
            format="json",
        )
        run_id = self.client.post(f"/api/parsers/{parser_id}/run/").json()["run_id"]
        self.client.post(f"/api/runs/{run_id}/cancel/")
        trail_before_deletion = self.client.get(f"/api/parsers/{parser_id}/audit/").json()["results"]
        self.client.delete(f"/api/parsers/{parser_id}/")

        # Then the whole trail is there, newest first, the deletion included
        trail = self.client.get(f"/api/audit/?parser={parser_id}").json()["results"]
        self.assertEqual([entry["action"] for entry in trail], ["deleted", "cancelled", "ran", "changed", "created"])
        self.assertEqual(trail[1:], trail_before_deletion)
        self.assertEqual({entry["username"] for entry in trail}, {"editor"})
        self.assertEqual({entry["source"] for entry in trail}, {"api"})
        self.assertEqual(trail[3]["fields"], ["restricted", "webhook_url", "environment.API_KEY"])
        self.assertEqual(trail[1]["run_id"], trail[2]["run_id"])
        self.assertEqual(trail[2]["run_id"], run_id)
        self.assertIn("name", trail[4]["fields"])
        self.assertIn("script", trail[4]["fields"])
        self.assertEqual(trail[0]["parser_name"], "rates")
        # And no value of a secret is in it
        self.assertNotIn(SECRET, str(trail))
        self.assertNotIn("93.184.216.34", str(trail))

    def test_a_refused_change_leaves_no_entry(self):
        parser = make_parser(SOURCE, name="weather")

        response = self.client.patch(f"/api/parsers/{parser.pk}/", {"cron": "not cron"}, format="json")

        self.assertEqual(response.status_code, 400)
        self.assertFalse(AuditEntry.objects.exists())
