"""Who may do what through the API: the admin's model permissions, action by action (README: Permissions)."""

from django.conf import settings
from rest_framework.permissions import BasePermission

# What reading a parser's secrets takes: its environment values, its webhook URL and its script's source.
SECRETS_PERMISSION = "core.change_parser"


class ActionPermissions(BasePermission):
    """A view names the permission each of its actions needs (`action_permissions`); an action it does not name
    is refused. A view without the map (the API's root, a list of links) needs some permission of Parseq's.
    """

    message = "You do not have the permission this needs."

    def has_permission(self, request, view):
        user = request.user
        if not (user and user.is_authenticated):
            return False
        required = getattr(view, "action_permissions", None)
        if required is None:
            self.message = "This needs one of Parseq's permissions, such as core.view_parser."
            return user.has_module_perms("core")
        action = getattr(view, "action", None)
        if action == "metadata" and request.method != "OPTIONS":
            # OPTIONS asks for each method whether it would be allowed: judge that method's own action.
            action = view.action_map.get(request.method.lower())
        if action is None:
            return True  # a method the view does not have: it answers 405
        if action not in required:
            return False
        self.message = f"This needs the permission {required[action]}."
        return user.has_perm(required[action])


class PublicDownloads(BasePermission):
    """A result link (`/<run_id>/<filename>`) is a capability; with PARSEQ_PUBLIC_DOWNLOADS=false it takes view_run."""

    message = "Downloading needs the permission core.view_run (PARSEQ_PUBLIC_DOWNLOADS is false)."

    def has_permission(self, request, view):
        if settings.PUBLIC_DOWNLOADS:
            return True
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm("core.view_run"))


def may_read_secrets(user):
    return bool(user and user.is_authenticated and user.has_perm(SECRETS_PERMISSION))
