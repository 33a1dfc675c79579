"""The admin site, with a limit on login attempts per client address (ADMIN_LOGIN_THROTTLE_RATE).

Each attempt hashes a password (a million PBKDF2 rounds, about 0.2 s of CPU), a wrong user name included: without a
limit, passwords could be guessed at leisure, and a dozen attempts a second kept every web worker busy."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.views.autocomplete import AutocompleteJsonView
from django.http import HttpResponse

from config.throttling import ClientThrottle


class AdminLoginThrottle(ClientThrottle):
    scope = "admin_login"
    # By the /48 a site is given, not the /64 of one host: a site's 65,536 /64s each guessed passwords at the full
    # rate. A site's admins share the limit; they are few, and a login seldom fails.
    ipv6_prefix = 48


class LabelledAutocompleteJsonView(AutocompleteJsonView):
    """Autocomplete results labelled by their model admin's ``autocomplete_label(obj)`` where it has one: two
    categories named "Accessories" under different parents were two identical choices."""

    def serialize_result(self, obj, to_field_name):
        result = super().serialize_result(obj, to_field_name)
        if label := getattr(self.model_admin, "autocomplete_label", None):
            result["text"] = label(obj)
        return result


class LookalikeAdminSite(admin.AdminSite):
    def autocomplete_view(self, request):
        return LabelledAutocompleteJsonView.as_view(admin_site=self)(request)

    def login(self, request, extra_context=None):
        if request.method == "POST":
            throttle = AdminLoginThrottle()
            if not throttle.allow_request(request, None):
                wait = throttle.retry_after()
                response = HttpResponse(f"Too many login attempts from your address. Try again in {wait} seconds.",
                                        status=429, content_type="text/plain; charset=utf-8")
                response["Retry-After"] = str(wait)
                return response
        return super().login(request, extra_context)
