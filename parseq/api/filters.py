from datetime import UTC

from django import forms
from django.db.models import Q
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeField
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from parseq.core.models import LARGEST_ID, AuditEntry, Parser, Run


@extend_schema_field(OpenApiTypes.INT)
class IdFilter(filters.Filter):
    field_class = forms.IntegerField


@extend_schema_field(OpenApiTypes.BOOL)
class TrueOrFalseFilter(filters.TypedChoiceFilter):
    """`true` or `false`, and a 400 for anything else (django-filter's BooleanFilter ignores what it cannot read)."""

    def __init__(self, **kwargs):
        super().__init__(choices=[("true", "true"), ("false", "false")], coerce=lambda value: value == "true", **kwargs)


class MomentField(IsoDateTimeField):
    """An ISO 8601 moment, given to the database in UTC: PostgreSQL refuses offsets past 15:59 (-17:52 is valid
    ISO 8601), and a moment must exist in UTC too (0001-01-01T00:00-05:00 would be in the year 0).
    """

    def to_python(self, value):
        moment = super().to_python(value)
        try:
            return moment.astimezone(UTC) if moment else moment
        except OverflowError:
            raise forms.ValidationError("The moment lies outside the years 1 to 9999 in UTC.") from None


class MomentFilter(filters.IsoDateTimeFilter):
    field_class = MomentField


class RunFilter(filters.FilterSet):
    parser = IdFilter(field_name="parser", min_value=1, max_value=LARGEST_ID, help_text="A parser's id.")
    status = filters.ChoiceFilter(choices=Run.Status.choices)
    trigger = filters.ChoiceFilter(choices=Run.Trigger.choices)
    created_after = MomentFilter(field_name="created_time", lookup_expr="gte")
    created_before = MomentFilter(field_name="created_time", lookup_expr="lt")
    ordering = filters.OrderingFilter(
        fields=["created_time", "started_time", "finished_time", "scheduled_for", "status"],
        help_text="A field to sort by, `-` first for descending; newest first by default.",
    )

    class Meta:
        model = Run
        fields = ["parser", "status", "trigger", "created_after", "created_before", "ordering"]


class ParserFilter(filters.FilterSet):
    # As the admin's search box: a word of the name or the description (never of a secret: script, variables).
    search = filters.CharFilter(method="search_words", help_text="A word of the parser's name or description.")
    enabled = TrueOrFalseFilter(help_text="Whether its automatic runs are on: true or false.")
    name = filters.CharFilter(strip=False, help_text="The parser's exact name.")

    class Meta:
        model = Parser
        fields = ["search", "enabled", "name"]

    def search_words(self, queryset, name, value):
        for word in value.split():
            queryset = queryset.filter(Q(name__icontains=word) | Q(description__icontains=word))
        return queryset


class AuditEntryFilter(filters.FilterSet):
    # By id, not as a relation: the trail keeps the ids of parsers that were deleted.
    parser = IdFilter(field_name="parser_id", min_value=1, max_value=LARGEST_ID, help_text="A parser's id.")
    action = filters.ChoiceFilter(choices=AuditEntry.Action.choices)
    source = filters.ChoiceFilter(choices=AuditEntry.Source.choices)
    username = filters.CharFilter(help_text="Who did it.")

    class Meta:
        model = AuditEntry
        fields = ["parser", "action", "source", "username"]
