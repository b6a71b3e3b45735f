"""What the site can serve right now: a friendly 503 while the database is away, and no
password reset while no mail is configured (it could never send its link)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse

logger = logging.getLogger(__name__)

PASSWORD_RESET_VIEWS = frozenset(
    {"password_reset", "password_reset_done", "password_reset_confirm", "password_reset_complete"}
)
# Clients may retry after this many seconds.
RETRY_AFTER = 10


class AvailabilityMiddleware:
    """Answer 503 (a real page) when the database cannot be reached, and 404 for the
    password-reset pages unless `ROOMCAST_EMAIL_ENABLED`. Every request tries the
    database afresh, so pages come back by themselves when it does."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: Any, kwargs: Any
    ) -> HttpResponse | None:
        match = request.resolver_match
        if (
            match is not None
            and match.url_name in PASSWORD_RESET_VIEWS
            and not settings.ROOMCAST_EMAIL_ENABLED
        ):
            raise Http404("Password reset needs mail, and none is configured.")
        return None

    def process_template_response(
        self, request: HttpRequest, response: TemplateResponse
    ) -> TemplateResponse:
        # The login page links to password reset only when it can work.
        if response.context_data is not None:
            response.context_data.setdefault(
                "password_reset_enabled", settings.ROOMCAST_EMAIL_ENABLED
            )
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OperationalError | InterfaceError):
            return None  # not ours: Django's own handling (a 500, logged)
        logger.warning(
            "database unavailable for %s %s: %s", request.method, request.path, exception
        )
        # Rendered without the request: its context would ask the database for the user.
        response = HttpResponse(render_to_string("503.html"), status=503)
        response["Retry-After"] = str(RETRY_AFTER)
        return response
