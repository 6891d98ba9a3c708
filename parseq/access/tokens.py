"""API tokens: one per user, made when first asked for (`parseq login`), revoked in the admin."""

from rest_framework.authtoken.models import Token


def token_of(*, user):
    """The user's API token, made now if they have none."""
    token, _ = Token.objects.get_or_create(user=user)
    return token
