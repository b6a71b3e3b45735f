"""Prometheus metrics of this process (prometheus-client), served at /metrics.

Each server process counts its own sockets and frames; a scraper reads every process
(they are separate targets), so no figure here is shared across processes.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

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
