"""Each parser's stored script becomes its version 1, and the runs that ran that content refer to it."""

import hashlib
import os

from django.core.files.storage import default_storage
from django.db import migrations
from django.db.models import OuterRef, Subquery

MAX_SCRIPT_BYTES = 256 * 1024


def first_versions(apps, schema_editor):
    Parser = apps.get_model("core", "Parser")
    Run = apps.get_model("core", "Run")
    ScriptVersion = apps.get_model("core", "ScriptVersion")
    for parser in Parser.objects.filter(script_versions__isnull=True).exclude(script="").iterator():
        try:
            with default_storage.open(parser.script.name, "rb") as file:
                content = file.read(MAX_SCRIPT_BYTES + 1)
        except OSError:
            continue  # a script that cannot be read has no version until its next upload
        ScriptVersion.objects.create(
            parser=parser,
            number=1,
            source=content.decode("utf-8", errors="replace").replace("\0", ""),
            filename=os.path.basename(parser.script.name),
            sha256=hashlib.sha256(content).hexdigest(),
            message="the script when versions began to be kept",
        )
    same_content = ScriptVersion.objects.filter(parser=OuterRef("parser"), sha256=OuterRef("script_sha256"))
    Run.objects.filter(script_version__isnull=True).exclude(script_sha256="").update(
        script_version=Subquery(same_content.values("pk")[:1])
    )


class Migration(migrations.Migration):
    dependencies = [("core", "0012_script_versions_and_run_parameters")]

    operations = [migrations.RunPython(first_versions, migrations.RunPython.noop)]
