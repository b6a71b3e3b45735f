"""Probes for load balancers and orchestrators: /healthz (liveness) and /readyz (readiness).

Both answer JSON with no secrets in it: a check that fails reports the exception's class,
never its message (which could carry a host name or a password from a URL).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils.module_loading import import_string
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)

# A check returns its status ("ok", "skipped", "unknown") or raises; only a raise or
# "fail" makes the site unready.
Check = Callable[[], str]
# Redis is asked with short timeouts: a probe must answer before the balancer gives up.
REDIS_TIMEOUT = 1.0


def check_database() -> str:
    """One round trip to the database."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def check_redis() -> str:
    """PING the Redis that carries the channel layer, presence and limits, if there is one."""
    if not settings.REDIS_URL:
        return "skipped"
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
    )
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def check_workers() -> str:
    """At least one job worker alive, as the function named by ROOMCAST_WORKER_CHECK says.

    That function takes no argument and returns how many workers are alive. Until one is
    named, the status is "unknown" (reported, but not a failure).
    """
    path = getattr(settings, "ROOMCAST_WORKER_CHECK", "")
    if not path:
        return "unknown"
    count_workers: Callable[[], int] = import_string(path)
    return "ok" if count_workers() > 0 else "fail"


CHECKS: dict[str, Check] = {
    "database": check_database,
    "redis": check_redis,
    "workers": check_workers,
}


def run_check(name: str, check: Check) -> str:
    """Run one check; a failure is logged (with its message) and reported as its class only."""
    try:
        return check()
    except Exception as error:  # any failure means "not ready", whatever its kind
        logger.warning("readiness check %s failed: %r", name, error, extra={"check": name})
        return f"fail: {type(error).__name__}"


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers requests. No I/O."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: the database, Redis (if configured) and a job worker are reachable."""
    results = {name: run_check(name, check) for name, check in CHECKS.items()}
    ready = not any(status.startswith("fail") for status in results.values())
    return JsonResponse(
        {"status": "ok" if ready else "fail", "checks": results}, status=200 if ready else 503
    )
