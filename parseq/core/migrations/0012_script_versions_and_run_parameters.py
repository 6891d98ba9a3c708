"""Script versions, the version a run ran, and the parameters a run was given."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0011_run_recording_retries'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='run',
            name='parameters',
            field=models.JSONField(blank=True, db_default={}, default=dict),
        ),
        migrations.CreateModel(
            name='ScriptVersion',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('number', models.PositiveIntegerField()),
                ('source', models.TextField()),
                ('filename', models.CharField(max_length=255)),
                ('sha256', models.CharField(max_length=64)),
                ('author_name', models.CharField(blank=True, max_length=150)),
                ('message', models.CharField(blank=True, max_length=200)),
                ('created_time', models.DateTimeField(auto_now_add=True)),
                ('author', models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('parser', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='script_versions', to='core.parser')),
            ],
            options={
                'ordering': ['parser', '-number'],
            },
        ),
        migrations.AddField(
            model_name='run',
            name='script_version',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.RESTRICT, related_name='runs', to='core.scriptversion'),
        ),
        migrations.AddConstraint(
            model_name='scriptversion',
            constraint=models.UniqueConstraint(fields=('parser', 'number'), name='one_script_version_per_number'),
        ),
    ]
