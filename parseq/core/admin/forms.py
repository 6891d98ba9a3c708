"""The parser form: the script as a file or as text, ports and variables as people write them."""

from django import forms
from django.urls import reverse

from parseq.core import intake
from parseq.core.environment import MASK, masked_text, parse_environment_text
from parseq.core.models import Parser


class PortsField(forms.CharField):
    """Ports as people write them, `8080, 8443`; a list of numbers for the model."""

    def prepare_value(self, value):
        return ", ".join(str(port) for port in value) if isinstance(value, list) else value

    def to_python(self, value):
        text = super().to_python(value) or ""
        words = [word for word in text.replace(",", " ").split() if word]
        if not all(word.isascii() and word.isdigit() for word in words):
            raise forms.ValidationError("Give port numbers separated by commas, as 8080, 8443.")
        return [int(word) for word in words]


class ScriptInput(forms.FileInput):
    """The stored script's name, linking its source, then a file input; no "clear": a parser always has a script."""

    template_name = "admin/core/parser/script_input.html"

    def __init__(self, *, source_url, attrs=None):
        super().__init__(attrs)
        self.source_url = source_url

    def is_initial(self, value):
        return bool(value and getattr(value, "name", None))

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        context["widget"].update(is_initial=self.is_initial(value), value=value, source_url=self.source_url)
        return context


class ParserForm(forms.ModelForm):
    script_text = forms.CharField(
        label="Script as text",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 20, "cols": 100, "spellcheck": "false", "class": "parseq-editor"}),
        help_text="Edit the script here, or upload a file above: either is checked the same way before it is saved.",
    )
    script_message = forms.CharField(
        label="Why it changed",
        required=False,
        max_length=200,
        help_text="Kept with the script's new version (optional); a save that leaves the script as it is "
        "adds no version.",
    )
    extra_egress_ports = PortsField(
        label="Extra egress ports",
        required=False,
        help_text=Parser._meta.get_field("extra_egress_ports").help_text,
    )
    environment_text = forms.CharField(
        label="Environment",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60, "spellcheck": "false"}),
        help_text="One NAME=value a line, passed to this parser's runs only. Saved values are shown as "
        f"{MASK}: leave a line as it is to keep its value.",
    )

    class Meta:
        model = Parser
        fields = Parser.EDITABLE_FIELDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "script" not in self.fields:
            return  # a reader's page: every field is shown read-only, none is a form field
        self.fields["environment_text"].initial = masked_text(self.instance.environment or {})
        self.fields["script"].required = False  # a script may come as text instead; clean() requires one
        if self.instance.pk and self.instance.script:
            source_url = reverse("api:parser-script", args=[self.instance.pk])
            self.fields["script"].widget = ScriptInput(source_url=source_url, attrs={"accept": ".py"})
            try:
                self.fields["script_text"].initial = intake.script_source(parser=self.instance)
            except OSError as error:
                self.fields["script_text"].help_text = f"The stored script cannot be read: {error}"

    def _load_into_the_editor(self, upload):
        """A refused upload is not lost: the page comes back with it in the editor, to be fixed and saved."""
        text = intake.refused_upload_text(upload)
        if text is not None:
            self.data = self.data.copy()
            self.data["script_text"] = text
            self.add_error("script_text", f"{upload.name} is here as it was refused: fix it here and save.")

    def clean_environment_text(self):
        text = self.cleaned_data["environment_text"]
        environment, problems = parse_environment_text(text, previous=self.instance.environment or {})
        if problems:
            raise forms.ValidationError(problems)
        self.instance.environment = environment
        return masked_text(environment)

    def clean(self):
        cleaned = super().clean()
        if "script" not in self.fields:
            return cleaned
        text = cleaned.get("script_text", "")
        upload = (cleaned.get("script") or None) if "script" in self.changed_data else None
        try:
            script = intake.incoming_script(
                upload=upload,
                # The editor shows the stored script: only an edit that leaves some text is a new script.
                text=text if "script_text" in self.changed_data and text.strip() else None,
                parser=self.instance,
                parser_name=cleaned.get("name") or self.instance.name,
                restricted=cleaned.get("restricted", False),
            )
        except forms.ValidationError as error:
            self.add_error(None, error)
            if upload is not None and "script" in getattr(error, "error_dict", {}):
                self._load_into_the_editor(upload)
            return cleaned
        if script is not None:
            cleaned["script"] = script
            if "script" not in self.changed_data:
                self.changed_data.append("script")
        return cleaned
