"""Live fragments: each one is a `{% partialdef %}` of the page that shows it.

The page view and the live path render the same partials, so one definition serves the
first render and every push. Each pushed fragment's root carries the id and the
`hx-swap-oob` it needs, in the template.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.conf import settings
from django.template.loader import render_to_string

ROOM_PAGE = "rooms/room_detail.html"


def message_context(message: dict) -> dict:
    """Template values for one message, from the plain values an event carries."""
    return {**message, "created": datetime.fromtimestamp(message["created"], UTC)}


def new_messages(messages: list[dict]) -> str:
    """Messages appended to `#messages`, and the page's new last sequence number."""
    return render_to_string(
        f"{ROOM_PAGE}#new_messages",
        {
            "messages": [message_context(m) for m in messages],
            "last_seq": messages[-1]["seq"],
        },
    )


def message_history(messages: list[dict], last_seq: int) -> str:
    """The whole `#messages` list, replacing what the page shows."""
    return render_to_string(
        f"{ROOM_PAGE}#message_history_oob",
        {"messages": [message_context(m) for m in messages], "last_seq": last_seq},
    )


def message_form_reset() -> str:
    """A blank, focused message input and no error: what the sender sees after posting."""
    return render_to_string(
        f"{ROOM_PAGE}#message_form_reset", {"max_length": settings.ROOMCAST_MESSAGE_MAX_LENGTH}
    )


def message_error(error: str) -> str:
    """An error shown next to the message form."""
    return render_to_string(f"{ROOM_PAGE}#message_error_oob", {"error": error})
