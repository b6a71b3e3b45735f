"""Prometheus metrics of this process (prometheus-client), served at /metrics.

Each server process counts its own sockets and frames; a scraper reads every process
(they are separate targets), so no figure here is shared across processes.
/metrics answers staff users and the addresses in ROOMCAST_METRICS_ALLOW only.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, generate_latest

# Socket kinds: "room" (a room page), "user" (any other page), "dashboard".
SOCKETS_OPEN = Gauge("roomcast_sockets_open", "Open WebSockets in this process.", ["kind"])
SOCKET_CLOSES = Counter(
    "roomcast_socket_closes", "WebSockets closed, by close code.", ["kind", "code"]
)
FRAMES_SENT = Counter("roomcast_frames_sent", "WebSocket frames written to sockets.", ["kind"])
EVENTS_DELIVERED = Counter(
    "roomcast_events_delivered", "Room events (messages, edits, deletes) delivered to sockets."
)
OUTBOX_DEPTH = Gauge("roomcast_outbox_depth", "Events waiting in every socket outbox.")
OUTBOX_OVERFLOWS = Counter(
    "roomcast_outbox_overflows", "Socket outboxes that overflowed and fell back to catch-up."
)
CATCH_UP_QUERIES = Counter(
    "roomcast_catch_up_queries", "Database queries run to catch sockets up (shared per range)."
)
LIMIT_REFUSALS = Counter(
    "roomcast_limit_refusals", "Frames, writes and sockets refused by a limit.", ["limit"]
)
JOBS = Counter("roomcast_jobs", "Background jobs finished in this process.", ["task", "status"])

# Socket kinds are known in advance: their series exist (at 0) from the start, so a
# dashboard shows "none yet" instead of "no data".
SOCKET_KINDS = ("room", "user", "dashboard")
for _kind in SOCKET_KINDS:
    SOCKETS_OPEN.labels(kind=_kind)
    FRAMES_SENT.labels(kind=_kind)


def address_allowed(address: str, allowed: list[str]) -> bool:
    """Whether a client address is in one of the allowed IPs or networks."""
    try:
        client = ipaddress.ip_address(address)
    except ValueError:  # no usable peer address (a unix socket): not on any list
        return False
    return any(client in ipaddress.ip_network(entry, strict=False) for entry in allowed)


def may_read_metrics(request: HttpRequest) -> bool:
    """Staff users, and clients at an address ROOMCAST_METRICS_ALLOW lists."""
    if request.user.is_authenticated and request.user.is_staff:
        return True
    return address_allowed(request.META.get("REMOTE_ADDR", ""), settings.ROOMCAST_METRICS_ALLOW)


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Every metric of this process in the Prometheus text format."""
    if not may_read_metrics(request):
        return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
