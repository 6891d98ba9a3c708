from django import forms
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from parseq.core.models import Run

LARGEST_ID = 2**63 - 1


@extend_schema_field(OpenApiTypes.INT)
class IdFilter(filters.Filter):
    field_class = forms.IntegerField


class RunFilter(filters.FilterSet):
    parser = IdFilter(field_name="parser", min_value=1, max_value=LARGEST_ID, help_text="A parser's id.")
    status = filters.ChoiceFilter(choices=Run.Status.choices)
    trigger = filters.ChoiceFilter(choices=Run.Trigger.choices)
    created_after = filters.IsoDateTimeFilter(field_name="created_time", lookup_expr="gte")
    created_before = filters.IsoDateTimeFilter(field_name="created_time", lookup_expr="lt")
    ordering = filters.OrderingFilter(
        fields=["created_time", "started_time", "finished_time", "scheduled_for", "status"],
        help_text="A field to sort by, `-` first for descending; newest first by default.",
    )

    class Meta:
        model = Run
        fields = ["parser", "status", "trigger", "created_after", "created_before", "ordering"]
