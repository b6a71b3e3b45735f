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
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

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


def send_now(send: Send, message: dict[str, Any]) -> None:
    """Run daphne's send to its end without awaiting: `Server.handle_reply` is a coroutine
    that never waits (it hands the frame to Twisted), so the fan-out can write a frame
    without a task wake-up per socket. Only for a send `transport_of` recognised."""
    coroutine = cast(Coroutine[Any, Any, None], send(message))
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise RuntimeError("the server's send waited: it cannot be run without awaiting")


# daphne's send of a frame costs far more than the frame: autobahn frames it, Twisted
# buffers it and registers the socket with epoll, and the next loop turn sends it and
# unregisters it (two epoll_ctl calls and much Python per socket per frame). When nothing
# waits in the socket's buffers, `write_text` frames the text itself (RFC 6455: a final,
# unmasked text frame) and hands it to the kernel at once; what the kernel does not take
# goes to Twisted's buffer as usual. Anything unusual (not open, compression negotiated,
# autobahn or Twisted holding data) goes through daphne's own send.
OPEN_STATE = 3  # autobahn's WebSocketProtocol.STATE_OPEN
GROUND_STATE = 0  # autobahn's WebSocketProtocol.SEND_STATE_GROUND


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked WebSocket text frame (server to client)."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return bytes((0x81, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + size.to_bytes(8, "big") + payload


def write_text(send: Send, transport: Any, text: str) -> None:
    """Send a text frame on daphne's socket now (see above); `transport` from `transport_of`."""
    protocol = send.args[0]  # type: ignore[attr-defined]
    if (
        protocol.state != OPEN_STATE
        or protocol.send_state != GROUND_STATE
        or protocol._perMessageCompress is not None
        or protocol.send_queue
        or not transport.connected
        or transport.disconnecting
        or transport._tempDataLen
        or len(transport.dataBuffer) > transport.offset
    ):
        send_now(send, {"type": "websocket.send", "text": text})
        return
    data = text_frame(text.encode())
    try:
        sent = transport.socket.send(data)
    except OSError:  # would block, or the peer is gone: Twisted sends it or sees the error
        sent = 0
    if sent < len(data):
        transport.write(data[sent:])


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


# uvicorn (its default, sans-I/O websockets protocol) does give backpressure: its send first
# awaits `protocol.writable`, an asyncio.Event cleared while the transport's buffer is over
# its high-water mark, then frames the text and writes it to the transport without awaiting.
# While `writable` is set that coroutine never waits, so the fan-out can run it to its end as
# it does daphne's (no task wake-up per socket per frame); while it is not, the socket's
# writer task awaits the send and its bounded outbox does the rest. tests/test_channels_adapter.py
# fails if uvicorn's send changes shape.
UVICORN_PROTOCOL = "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol"


def uvicorn_protocol_of(send: Send) -> Any | None:
    """uvicorn's sans-I/O WebSocket protocol behind a raw send, or None under any other."""
    protocol = getattr(send, "__self__", None)
    kind = type(protocol)
    if f"{kind.__module__}.{kind.__qualname__}" != UVICORN_PROTOCOL:
        return None
    if getattr(send, "__name__", "") != "send":
        return None
    return protocol


def send_if_writable(protocol: Any, send: Send, text: str) -> bool:
    """Send a text frame on uvicorn's socket now if its transport takes more; False if the
    client is behind (the caller's writer task awaits the send instead)."""
    if not protocol.writable.is_set() or protocol.close_sent or protocol.disconnected:
        return False
    send_now(send, {"type": "websocket.send", "text": text})
    return True
