"""Every admin page and action against every kind of user: the same rows as the API's (README: Permissions)."""

from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.test import TestCase

from parseq.alerts.models import WebhookDelivery
from parseq.core import audit
from parseq.core.models import AuditEntry, Parser, Run
from tests.api.helpers import completed_run, user_in
from tests.api.test_permissions import ROLES, SECRET, WEBHOOK
from tests.helpers import TemporaryMediaMixin, make_parser

SOURCE = "def parse():\n    return {'secret_marker.txt': b'x'}\n"
FORM = {
    "name": "weather",
    "timeout": "60",
    "max_attempts": "2",
    "network": "internet",
    "overlap": "skip",
    "webhook_on": "error",
}
ADMIN_ROLES = {**ROLES, "Viewer": ROLES["Viewer"] | {"view_webhookdelivery"}}
ADMIN_ROLES["Operator"] = ROLES["Operator"] | {"view_webhookdelivery", "change_webhookdelivery"}
ADMIN_ROLES["Editor"] = ROLES["Editor"] | {"view_webhookdelivery", "change_webhookdelivery"}
ADMIN_ROLES["superuser"] = ROLES["superuser"] | {"view_webhookdelivery", "change_webhookdelivery"}


@dataclass
class Operation:
    """A page or action of the admin, the permission it needs, and how to tell that it took effect."""

    name: str
    needs: str
    method: str
    url: str  # formatted with the objects' ids: {parser}, {run}, {queued}, {delivery}
    data: dict = field(default_factory=dict)
    # For a write: a question about the objects afterwards, true when the write happened.
    happened: object = None


def _action(name, selected, **extra):
    """The changelist's form for action `name` on the object named `selected` (its id is filled in later)."""
    return {"action": name, "_selected_action": f"<{selected}>", **extra}


def _fill(value, objects):
    """A form value, with `<name>` replaced by the id of that object."""
    return objects[value[1:-1]] if value.startswith("<") and value.endswith(">") else value


OPERATIONS = [
    Operation("parser list", "view_parser", "get", "/admin/core/parser/"),
    Operation("parser page", "view_parser", "get", "/admin/core/parser/{parser}/change/"),
    Operation("add page", "add_parser", "get", "/admin/core/parser/add/"),
    Operation(
        "add a parser",
        "add_parser",
        "post",
        "/admin/core/parser/add/",
        {**FORM, "name": "new", "script_text": SOURCE},
        lambda o: Parser.objects.filter(name="new").exists(),
    ),
    Operation(
        "change a parser",
        "change_parser",
        "post",
        "/admin/core/parser/{parser}/change/",
        {**FORM, "description": "changed", "environment_text": "API_KEY=********"},
        lambda o: Parser.objects.filter(description="changed").exists(),
    ),
    Operation(
        "delete a parser",
        "delete_parser",
        "post",
        "/admin/core/parser/{parser}/delete/",
        {"post": "yes"},
        lambda o: not Parser.objects.filter(pk=o["parser"]).exists(),
    ),
    Operation(
        "Run now button",
        "run_parser",
        "post",
        "/admin/core/parser/{parser}/run/",
        happened=lambda o: Run.objects.count() > 2,
    ),
    Operation(
        "Run now action",
        "run_parser",
        "post",
        "/admin/core/parser/",
        _action("run_now", "parser"),
        lambda o: Run.objects.count() > 2,
    ),
    Operation(
        "automatic runs off action",
        "change_parser",
        "post",
        "/admin/core/parser/",
        _action("disable_automatic_runs", "parser"),
        lambda o: not Parser.objects.get(pk=o["parser"]).enabled,
    ),
    Operation(
        "delete selected parsers action",
        "delete_parser",
        "post",
        "/admin/core/parser/",
        _action("delete_selected", "parser", post="yes"),
        lambda o: not Parser.objects.filter(pk=o["parser"]).exists(),
    ),
    Operation("run list", "view_run", "get", "/admin/core/run/"),
    Operation("run page", "view_run", "get", "/admin/core/run/{run}/change/"),
    Operation("live view", "view_run", "get", "/admin/core/run/live/?scope=runs"),
    Operation(
        "Cancel run button",
        "cancel_run",
        "post",
        "/admin/core/run/{queued}/cancel/",
        happened=lambda o: Run.objects.get(pk=o["queued"]).status == Run.Status.CANCELLED,
    ),
    Operation(
        "cancel selected runs action",
        "cancel_run",
        "post",
        "/admin/core/run/",
        _action("cancel_runs", "queued"),
        lambda o: Run.objects.get(pk=o["queued"]).status == Run.Status.CANCELLED,
    ),
    Operation(
        "delete selected runs action",
        "delete_run",
        "post",
        "/admin/core/run/",
        _action("delete_selected", "run", post="yes"),
        lambda o: not Run.objects.filter(pk=o["run"]).exists(),
    ),
    Operation("audit trail", "view_auditentry", "get", "/admin/core/auditentry/"),
    Operation("webhook deliveries", "view_webhookdelivery", "get", "/admin/alerts/webhookdelivery/"),
    Operation(
        "Retry delivery action",
        "change_webhookdelivery",
        "post",
        "/admin/alerts/webhookdelivery/",
        _action("retry_delivery", "delivery"),
        lambda o: WebhookDelivery.objects.get(pk=o["delivery"]).status == WebhookDelivery.Status.PENDING,
    ),
]


class EveryAdminOperationForEveryRoleTests(TemporaryMediaMixin, TestCase):
    def setUp(self):
        model = get_user_model()
        self.users = {
            "anonymous": None,
            "staff without permissions": model.objects.create_user("staff", is_staff=True),
            "Viewer": user_in("Viewers", "viewer", is_staff=True),
            "Operator": user_in("Operators", "operator", is_staff=True),
            "Editor": user_in("Editors", "editor", is_staff=True),
            "superuser": model.objects.create_superuser("root", password="root-pass"),
        }

    def make_objects(self):
        Parser.objects.all().delete()
        parser = make_parser(SOURCE, name="weather", environment={"API_KEY": SECRET}, webhook_url=WEBHOOK)
        run = completed_run(parser, {"a.txt": b"a"})
        queued = Run.objects.create(parser=parser)
        delivery = WebhookDelivery.objects.create(
            run=run, parser=parser, url=WEBHOOK, event="run.error", payload={}, status=WebhookDelivery.Status.FAILED
        )
        audit.record(user=None, action=AuditEntry.Action.CREATED, source="command", parser=parser)
        return {"parser": parser.pk, "run": run.run_id, "queued": queued.run_id, "delivery": delivery.pk}

    def sign_in(self, role):
        self.client.logout()
        if self.users[role] is not None:
            self.client.force_login(self.users[role])

    def test_each_role_gets_exactly_what_its_permissions_allow(self):
        for role, permissions in ADMIN_ROLES.items():
            for operation in OPERATIONS:
                with self.subTest(role=role, operation=operation.name):
                    objects = self.make_objects()
                    self.sign_in(role)
                    data = {name: _fill(value, objects) for name, value in operation.data.items()}

                    response = getattr(self.client, operation.method)(operation.url.format(**objects), data)

                    allowed = operation.needs in permissions
                    if operation.happened is not None:
                        self.assertEqual(operation.happened(objects), allowed, f"{response.status_code}")
                    elif role == "anonymous":
                        self.assertEqual(response.status_code, 302)
                        self.assertIn("/admin/login/", response["Location"])
                    else:
                        self.assertEqual(response.status_code, 200 if allowed else 403)

    def test_the_dashboard_and_its_buttons_follow_the_same_permissions(self):
        self.make_objects()
        for role, permissions in ADMIN_ROLES.items():
            if role == "anonymous":
                continue
            with self.subTest(role=role):
                self.sign_in(role)

                page = self.client.get("/admin/").content.decode()

                self.assertEqual("Running now" in page, "view_run" in permissions)
                self.assertEqual("Parsers whose last run failed" in page, "view_parser" in permissions)
                self.assertEqual('action="/admin/core/run/' in page, "cancel_run" in permissions)

    def test_only_those_who_may_change_a_parser_see_its_script_values_and_webhook(self):
        objects = self.make_objects()
        for role in ["Viewer", "Operator", "Editor", "superuser"]:
            with self.subTest(role=role):
                self.sign_in(role)

                page = self.client.get(f"/admin/core/parser/{objects['parser']}/change/").content.decode()
                delivery = self.client.get(f"/admin/alerts/webhookdelivery/{objects['delivery']}/change/")

                may_change = role in ("Editor", "superuser")
                self.assertEqual("secret_marker" in page, may_change)  # the script's source
                self.assertEqual(WEBHOOK in page, may_change)
                self.assertEqual(WEBHOOK in delivery.content.decode(), may_change)
                self.assertIn("API_KEY", page)
                self.assertNotIn(SECRET, page)
                self.assertEqual('id="run-now"' in page, role != "Viewer")

    def test_no_list_can_be_filtered_by_a_secret_to_guess_it_a_letter_at_a_time(self):
        self.make_objects()
        self.sign_in("Viewer")
        for url in [
            "/admin/core/parser/?webhook_url__startswith=https",
            "/admin/core/parser/?environment__API_KEY__startswith=s",
            "/admin/core/parser/?environment__icontains=s3cr",
            "/admin/core/parser/?script__contains=demo",
            "/admin/alerts/webhookdelivery/?url__startswith=https",
        ]:
            with self.subTest(url=url):
                self.assertEqual(self.client.get(url).status_code, 400)
        self.assertEqual(self.client.get("/admin/core/parser/?enabled__exact=1").status_code, 200)

    def test_admin_changes_go_into_the_audit_trail_shown_on_the_parsers_page(self):
        objects = self.make_objects()
        AuditEntry.objects.all().delete()
        self.sign_in("Editor")

        unchanged = {**FORM, "enabled": "on", "restricted": "on", "timeout": "300", "webhook_url": WEBHOOK}
        self.client.post(
            f"/admin/core/parser/{objects['parser']}/change/", {**unchanged, "environment_text": "API_KEY=other"}
        )
        self.client.post(f"/admin/core/parser/{objects['parser']}/run/")
        self.client.post(
            "/admin/core/parser/", {"action": "disable_automatic_runs", "_selected_action": objects["parser"]}
        )

        entries = list(AuditEntry.objects.values_list("action", "source", "username", "fields"))
        self.assertEqual(
            entries,
            [
                ("changed", "admin", "editor", ["enabled"]),
                ("ran", "admin", "editor", []),
                ("changed", "admin", "editor", ["environment.API_KEY"]),
            ],
        )
        self.sign_in("superuser")
        self.client.post(
            "/admin/core/run/", {"action": "delete_selected", "_selected_action": objects["run"], "post": "yes"}
        )
        deletion = AuditEntry.objects.first()
        self.assertEqual((deletion.action, deletion.username, deletion.run_id), ("deleted", "root", objects["run"]))
        page = self.client.get(f"/admin/core/parser/{objects['parser']}/change/").content.decode()
        self.assertIn("environment.API_KEY", page)
        self.assertNotIn("other", page.split("Audit trail", 1)[1].split("</table>", 1)[0])
