"""The three groups of README: Permissions. Each has the one before's permissions and more.

Permissions are only added, never taken away: a group an operator has changed keeps the rest.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEWERS = [
    "core.view_parser",
    "core.view_run",
    "core.view_auditentry",
    "alerts.view_webhookdelivery",
]
OPERATORS = [*VIEWERS, "core.run_parser", "core.cancel_run", "alerts.change_webhookdelivery"]
EDITORS = [*OPERATORS, "core.add_parser", "core.change_parser", "core.delete_parser"]
GROUPS = {"Viewers": VIEWERS, "Operators": OPERATORS, "Editors": EDITORS}


def create_groups(apps, schema_editor):
    # Django makes permissions after all migrations have run; these groups need them now. create_permissions
    # skips an app without a models module, which historical apps never have: lend them one for the call.
    for app_config in apps.get_app_configs():
        models_module = getattr(app_config, "models_module", None)
        app_config.models_module = models_module or True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = models_module
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    for name, codes in GROUPS.items():
        group, _ = group_model.objects.get_or_create(name=name)
        for code in codes:
            app_label, codename = code.split(".")
            group.permissions.add(permission_model.objects.get(content_type__app_label=app_label, codename=codename))


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=GROUPS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0005_permissions_and_audit"),
        ("alerts", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_groups, remove_groups)]
