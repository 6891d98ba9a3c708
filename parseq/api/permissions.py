from django.conf import settings
from rest_framework.permissions import SAFE_METHODS, BasePermission


class ReadIfSignedInWriteIfStaff(BasePermission):
    """Any signed-in user may read; creating, changing, deleting and triggering need staff."""

    message = "Changing parsers and starting runs needs a staff user."

    def has_permission(self, request, view):
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return request.method in SAFE_METHODS or user.is_staff


class PublicDownloads(BasePermission):
    """A result link (`/<run_id>/<filename>`) is a capability, unless PARSEQ_PUBLIC_DOWNLOADS=false."""

    def has_permission(self, request, view):
        return settings.PUBLIC_DOWNLOADS or bool(request.user and request.user.is_authenticated)
