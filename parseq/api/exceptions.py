"""Every API error has one shape: {"detail": text, "code": word, "errors": {field: [text]}} (errors on 400).

A database outage is a 503 in that shape, never an HTML 500.
"""

import logging
import sys

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.views import exception_handler

logger = logging.getLogger(__name__)
# What a database outage raises; any other database error is a bug, answered as one.
DATABASE_UNREACHABLE = (OperationalError, InterfaceError)


class DatabaseUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = (
        "The database is unreachable. Try again shortly; a change you sent may have been saved before it "
        "went away, so look before sending it again."
    )
    default_code = "database_unavailable"


def handle(exception, context):
    if isinstance(exception, DjangoValidationError):
        exception = exceptions.ValidationError(_messages(exception))
    if isinstance(exception, DATABASE_UNREACHABLE):
        logger.warning("API request failed: the database is unreachable (%s)", exception)
        exception = DatabaseUnavailable()
    response = exception_handler(exception, context)
    if response is None:
        return None
    if isinstance(exception, DatabaseUnavailable):
        response["Retry-After"] = "10"
    if isinstance(exception, exceptions.ValidationError):
        errors = response.data if isinstance(response.data, dict) else {"non_field_errors": response.data}
        response.data = {"detail": "The request has invalid fields.", "code": "invalid", "errors": errors}
    elif isinstance(exception, exceptions.APIException):
        detail = exception.detail
        response.data = {"detail": str(detail), "code": getattr(detail, "code", exception.default_code)}
    else:  # Http404 and PermissionDenied from Django
        response.data = {"detail": str(response.data.get("detail", "")), "code": _code(response.status_code)}
    return response


@csrf_exempt
def not_found(request, *args, **kwargs):
    """Unknown paths under /api/ answer in JSON too, whatever the method.

    A plain view, not an API view: the browsable API's breadcrumbs list every API view along a path,
    and `/api/runs` (no slash) would show as a crumb named "Not Found".
    """
    return JsonResponse({"detail": "No such API endpoint.", "code": "not_found"}, status=status.HTTP_404_NOT_FOUND)


def server_error(request):
    """Django's 500 handler: the API's clients get JSON, a database outage as a 503; the admin its HTML page."""
    if not request.path.startswith("/api/"):
        return defaults.server_error(request)
    if isinstance(sys.exc_info()[1], DATABASE_UNREACHABLE):
        body = {"detail": DatabaseUnavailable.default_detail, "code": DatabaseUnavailable.default_code}
        return JsonResponse(body, status=503, headers={"Retry-After": "10"})
    return JsonResponse({"detail": "An error on the server; it is logged.", "code": "error"}, status=500)


def _messages(error):
    return error.message_dict if hasattr(error, "error_dict") else {"non_field_errors": error.messages}


def _code(status_code):
    return {404: "not_found", 403: "permission_denied"}.get(status_code, "error")
