from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.views.decorators.debug import sensitive_variables

from parseq.access import logins


class ThrottledAdminLoginForm(AdminAuthenticationForm):
    """The admin's login form, which refuses a locked-out user or address before it verifies the password.

    A failure is recorded through `user_login_failed` (parseq.access.logins); a success clears the user's
    failures from that address.
    """

    @sensitive_variables()
    def clean(self):
        username = self.cleaned_data.get("username")
        if username is None or not self.cleaned_data.get("password"):
            return super().clean()  # a required field is missing: nothing is verified
        attempt = logins.begin(username, self.request)
        if attempt.locked_out:
            raise ValidationError(logins.lockout_message(attempt.retry_after), code="throttled")
        cleaned_data = super().clean()
        logins.record_success(attempt)
        return cleaned_data
