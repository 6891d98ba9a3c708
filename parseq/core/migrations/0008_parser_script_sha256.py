import hashlib

from django.db import migrations, models


def hash_stored_scripts(apps, schema_editor):
    """Each parser's script hashed once, from storage; one that cannot be read stays unknown (blank)."""
    Parser = apps.get_model("core", "Parser")
    for parser in Parser.objects.exclude(script=""):
        digest = hashlib.sha256()
        try:
            with parser.script.open("rb") as script:
                for chunk in script.chunks():
                    digest.update(chunk)
        except OSError:
            continue
        Parser.objects.filter(pk=parser.pk).update(script_sha256=digest.hexdigest())


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0007_extra_egress_ports"),
    ]

    operations = [
        migrations.AddField(
            model_name="parser",
            name="script_sha256",
            field=models.CharField(blank=True, editable=False, max_length=64),
        ),
        migrations.RunPython(hash_stored_scripts, migrations.RunPython.noop),
    ]
