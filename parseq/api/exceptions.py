"""Every API error has one shape: {"detail": text, "code": word, "errors": {field: [text]}} (errors on 400)."""

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import exception_handler


def handle(exception, context):
    if isinstance(exception, DjangoValidationError):
        exception = exceptions.ValidationError(_messages(exception))
    response = exception_handler(exception, context)
    if response is None:
        return None
    if isinstance(exception, exceptions.ValidationError):
        errors = response.data if isinstance(response.data, dict) else {"non_field_errors": response.data}
        response.data = {"detail": "The request has invalid fields.", "code": "invalid", "errors": errors}
    elif isinstance(exception, exceptions.APIException):
        detail = exception.detail
        response.data = {"detail": str(detail), "code": getattr(detail, "code", exception.default_code)}
    else:  # Http404 and PermissionDenied from Django
        response.data = {"detail": str(response.data.get("detail", "")), "code": _code(response.status_code)}
    return response


@extend_schema(exclude=True)
@api_view(["GET", "POST", "PUT", "PATCH", "DELETE"])
@permission_classes([AllowAny])
def not_found(request, *args, **kwargs):
    """Unknown paths under /api/ answer in JSON too."""
    return Response({"detail": "No such API endpoint.", "code": "not_found"}, status=status.HTTP_404_NOT_FOUND)


def _messages(error):
    return error.message_dict if hasattr(error, "error_dict") else {"non_field_errors": error.messages}


def _code(status_code):
    return {404: "not_found", 403: "permission_denied"}.get(status_code, "error")
