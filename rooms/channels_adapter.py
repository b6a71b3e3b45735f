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
