from django.contrib import admin

from parseq.access.models import LoginFailure


@admin.register(LoginFailure)
class LoginFailureAdmin(admin.ModelAdmin):
    """Recent failed sign-ins, to look at; deleting a user's or an address's rows ends its lockout."""

    list_display = ["failed_time", "username", "address"]
    search_fields = ["username", "address"]
    date_hierarchy = "failed_time"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
