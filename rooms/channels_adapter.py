"""The one place the live core relies on a Channels internal, for speed.

Channels' session middleware wraps every `send` of a consumer in
`channels.sessions.InstanceSessionWrapper.send`, which only acts on messages that can
carry a cookie (`http.response.start`); for the thousands of `websocket.send` frames of a
busy room it is pure overhead (about a sixth of the fan-out's time when measured). The
wrapper keeps the server's own `send` as `real_send`: live frames go straight to it.

tests/test_channels_adapter.py fails loudly if Channels renames or changes either, so an
upgrade that breaks this is seen at once instead of silently falling back.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from channels.sessions import InstanceSessionWrapper

Send = Callable[[dict[str, Any]], Awaitable[None]]

# What this adapter assumes of Channels; checked by the test.
WRAPPER = InstanceSessionWrapper
WRAPPED_ATTRIBUTE = "real_send"
ACTS_ONLY_ON = ("http.response.start",)


def raw_send(send: Send) -> Send:
    """The server's own `send` under the session wrapper, for `websocket.send` frames only.

    Falls back to `send` itself under any other stack (tests that build consumers bare).
    """
    wrapper = getattr(send, "__self__", None)
    if isinstance(wrapper, WRAPPER):
        real: Send = getattr(wrapper, WRAPPED_ATTRIBUTE)
        return real
    return send


# daphne gives an ASGI app no backpressure: `websocket.send` returns at once and Twisted
# buffers whatever the client does not read. The server's send is
# `functools.partial(daphne.server.Server.handle_reply, protocol)`; the protocol's Twisted
# transport says how many bytes wait for the client. A socket whose buffer passes
# `ROOMCAST_SOCKET_BUFFER_LIMIT` is aborted (freeing the buffer at once); its page
# reconnects and catches up from the database. Under other servers (uvicorn awaits the
# transport's drain) this finds no transport, and the outbox bound does the job.


def transport_of(send: Send) -> Any | None:
    """daphne's Twisted transport behind a raw send, or None under any other server."""
    if not isinstance(send, functools.partial) or not send.args:
        return None
    if getattr(send.func, "__name__", "") != "handle_reply":
        return None
    try:
        from twisted.internet.abstract import FileDescriptor
    except ImportError:  # not under daphne
        return None
    # The protocol's transport is twisted.web's HTTP channel wrapper; the TCP connection
    # (a FileDescriptor, which holds the write buffer) is a level or two below.
    transport = getattr(send.args[0], "transport", None)
    for _ in range(4):
        if transport is None or isinstance(transport, FileDescriptor):
            return transport
        transport = getattr(transport, "transport", None)
    return None


def buffered_bytes(transport: Any) -> int:
    """Bytes written to a Twisted TCP transport that the client has not taken yet."""
    pending = len(transport.dataBuffer) - getattr(transport, "offset", 0)
    return int(pending + getattr(transport, "_tempDataLen", 0))


def abort(transport: Any) -> None:
    """Drop the connection now, and with it everything buffered for it."""
    transport.abortConnection()


def stop_reading(transport: Any) -> None:
    """Read nothing more from this client (a flooder being closed): what it still sends
    waits in the kernel's small buffer instead of daphne's unbounded queue."""
    transport.pauseProducing()
