"""No writes from other sites: an unsafe request a browser sends from another origin is refused (README: Permissions).

Django's CSRF check covers the admin's forms and the API's session users, but not requests
authenticated by HTTP Basic or a token, which a browser may attach on its own (it caches Basic
credentials). Browsers say where a request comes from (`Origin`, `Sec-Fetch-Site`); scripts and
SDKs send neither, and keep working.
"""

import logging
from urllib.parse import urlsplit

from django.conf import settings
from django.http import JsonResponse
from django.utils.http import is_same_domain

logger = logging.getLogger("django.security.crosssite")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")


class CrossSiteWriteGuard:
    """Refuse (403) an unsafe request from another origin, whatever credentials it carries."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method not in SAFE_METHODS:
            reason = cross_site_reason(request)
            if reason:
                logger.warning("refused %s %s: %s", request.method, request.path, reason)
                detail = f"Cross-site request refused: {reason}. Changes come from Parseq's own pages or from clients."
                return JsonResponse({"detail": detail, "code": "cross_site"}, status=403)
        return self.get_response(request)


def cross_site_reason(request):
    """Why `request` counts as sent by another site, or None."""
    origin = request.headers.get("Origin")
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        return f"the browser sent it from another site ({origin or 'no origin given'})"
    if origin is not None and not is_own_origin(origin, request):
        return f"it comes from {origin}, not from this site"
    if origin is None and request.headers.get("Sec-Fetch-Site") == "same-site":
        return "the browser sent it from another origin of this site"
    return None


def is_own_origin(origin, request):
    """Whether `origin` serves Parseq's pages: the request's own, PARSEQ_PUBLIC_URL's, or one of CSRF_TRUSTED_ORIGINS,
    where, as for Django's CSRF check, `https://*.example.com` stands for every subdomain of example.com.
    """
    public = urlsplit(settings.PUBLIC_URL)
    if origin in {f"{request.scheme}://{request.get_host()}", f"{public.scheme}://{public.netloc}"}:
        return True
    scheme, _, netloc = origin.partition("://")
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        trusted_scheme, _, trusted_netloc = trusted.partition("://")
        if "*" in trusted_netloc:
            if scheme == trusted_scheme and is_same_domain(netloc, trusted_netloc.removeprefix("*")):
                return True
        elif origin == trusted:
            return True
    return False
