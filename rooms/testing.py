"""Roomcast's test toolkit: connect to a room's socket, send what htmx sends, read fragments.

It is a pytest plugin too: `pytest_plugins = ["rooms.testing"]` in a conftest.py gives the
fixtures `room_socket` (connect to a room as a user), `user_socket` (the socket of every
other page), `broadcasts` (every event published during the test), `ws_application` and
`fanout_hub`. `capture_broadcasts()` records what one block of code publishes. See
docs/testing.md.

    async def test_post_reaches_the_room(room_socket, room, alice):
        socket = await room_socket(room, user=alice)
        await socket.post("hello")
        fragment = await socket.receive_fragment()
        assert fragment.target("messages").swap == "beforeend"
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from unittest import mock

import pytest
from asgiref.sync import sync_to_async
from bs4 import BeautifulSoup, Tag
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS
from django.test import Client, TestCase

from rooms import events, live
from rooms.clock import system as system_clock
from rooms.consumers import ROOM_EVENTS, RoomConsumer
from rooms.fanout import Hub
from rooms.fragments import Viewer
from rooms.routing import websocket_application

# Frames that swap only these are passed over by default: who is here, and the connection
# status the server re-sends every few seconds (ROOMCAST_LIVE_BEAT).
PASSED_OVER = ("presence", "connection")
DEFAULT_TIMEOUT = 2.0
QUIET_TIMEOUT = 0.2


@dataclass
class Swap:
    """One top-level element of a pushed frame: what htmx swaps, where, and how."""

    element: Tag

    @property
    def id(self) -> str:
        return self.element.get("id", "")

    @property
    def swap(self) -> str:
        """The out-of-band swap style; the ws extension treats a bare element as "true"."""
        return self.element.get("hx-swap-oob") or "true"

    def select(self, css: str) -> list[Tag]:
        return self.element.select(css)

    def text(self) -> str:
        return self.element.get_text(" ", strip=True)


class Fragment:
    """A frame the server pushed, parsed as HTML the way the htmx ws extension reads it."""

    def __init__(self, html: str) -> None:
        self.html = html
        self.soup = BeautifulSoup(html, "html.parser")
        self.swaps = [Swap(el) for el in self.soup.find_all(recursive=False) if el.name]

    def __repr__(self) -> str:
        return f"<Fragment targets={self.targets()!r}>"

    def targets(self) -> list[str]:
        """The ids of the elements this frame swaps, in order."""
        return [swap.id for swap in self.swaps]

    def target(self, element_id: str) -> Swap:
        """The swap aimed at `#element_id`; fails saying which targets the frame has."""
        for swap in self.swaps:
            if swap.id == element_id:
                return swap
        raise AssertionError(
            f"expected a swap targeting #{element_id}, got targets {self.targets()}:\n{self.html}"
        )

    def has_target(self, element_id: str) -> bool:
        return any(swap.id == element_id for swap in self.swaps)

    def select(self, css: str) -> list[Tag]:
        return self.soup.select(css)


def describe(message: dict) -> str:
    """What the server sent, for a failure message: a fragment (its targets and HTML), a
    close (its code), or a binary frame."""
    if message["type"] == "websocket.close":
        return f"the socket closed (code {message.get('code')})"
    if message.get("text") is None:
        return f"a binary frame of {len(message.get('bytes') or b'')} bytes"
    text = message["text"]
    return f"a fragment targeting {Fragment(text).targets()}:\n{text.strip()}"


def htmx_frame(form_id: str | None, **fields) -> str:
    """A frame as the htmx 2 ws extension sends it for a `ws-send` form."""
    headers = {
        "HX-Request": "true",
        "HX-Trigger": form_id,
        "HX-Trigger-Name": None,
        "HX-Target": form_id,
        "HX-Current-URL": "http://testserver/",
    }
    return json.dumps({**fields, "HEADERS": headers})


class RoomSocket:
    """A test client for one room socket, wrapping channels' WebsocketCommunicator."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator
        self.connected = False
        self.close_code: int | None = None

    async def connect(self, last_seq: int | None = 0) -> RoomSocket:
        """Open the socket; unless `last_seq` is None, report it as the page does on open."""
        self.connected, code = await self.communicator.connect(timeout=DEFAULT_TIMEOUT)
        assert self.connected, f"the socket handshake was refused (code {code})"
        if last_seq is not None:
            await self.sync(last_seq)
        return self

    async def sync(self, last_seq: int, live: bool | None = None) -> None:
        """Send what the page's sync form sends on htmx:wsOpen.

        A page also sends `live` ("0" until its socket first worked): pass `live=False` to
        get the `go_live` fragment back, as a freshly loaded page does. Left out by default,
        so that tests about other things are not sent it.
        """
        fields = {"action": "sync", "last_seq": str(last_seq)}
        if live is not None:
            fields["live"] = "1" if live else "0"
        await self.send_form("sync", **fields)

    async def post(self, message: str, client_key: str | None = None) -> None:
        """Send what the message form sends when submitted: a fresh composer's key each
        time unless `client_key` says which composed message this (re)sends."""
        key = client_key or uuid.uuid4().hex
        await self.send_form("message-form", action="post", message=message, client_key=key)

    async def post_lines(self, message: str, client_key: str | None = None) -> None:
        """Send what the several-lines composer sends when its Send button is clicked."""
        key = client_key or uuid.uuid4().hex
        await self.send_form(
            "lines-form", action="post", composer="lines", message=message, client_key=key
        )

    async def type(self) -> None:
        """Send what the page's typing signal sends while the user types (hx-vals only)."""
        await self.send_form("typing-signal", action="typing")

    async def edit(self, message_id: int) -> None:
        """Click a message's Edit button."""
        await self.send_form(None, action="edit", message_id=str(message_id))

    async def save(self, message_id: int, message: str) -> None:
        """Submit a message's edit form."""
        await self.send_form(None, action="save", message_id=str(message_id), message=message)

    async def cancel(self, message_id: int) -> None:
        """Click Cancel on a message's edit form."""
        await self.send_form(None, action="cancel", message_id=str(message_id))

    async def delete(self, message_id: int) -> None:
        """Click a message's Delete button."""
        await self.send_form(None, action="delete", message_id=str(message_id))

    async def send_form(self, form_id: str | None, **fields) -> None:
        """Send what the ws extension sends for the element `form_id` with these fields."""
        await self.communicator.send_to(text_data=htmx_frame(form_id, **fields))

    async def send_text(self, text: str) -> None:
        await self.communicator.send_to(text_data=text)

    async def send_bytes(self, data: bytes) -> None:
        await self.communicator.send_to(bytes_data=data)

    async def receive_fragment(
        self, timeout: float = DEFAULT_TIMEOUT, skip: tuple[str, ...] = PASSED_OVER
    ) -> Fragment:
        """The next frame, parsed; fails saying what came if none does or the socket closes.

        Frames that only swap targets in `skip` (by default the presence list, which
        arrives whenever anyone comes or goes, and the connection status) are passed over.
        """
        passed_over = 0
        while True:
            message = await self._next(timeout)
            if message is None:
                got = "nothing"
                if passed_over:
                    got += f" (passed over {passed_over} frames swapping only {list(skip)})"
                raise AssertionError(f"expected a fragment within {timeout}s, got {got}")
            self._note_close(message)
            if message.get("text") is None:
                raise AssertionError(f"expected a fragment, got {describe(message)}")
            fragment = Fragment(message["text"])
            if fragment.targets() and set(fragment.targets()) <= set(skip):
                passed_over += 1
                continue
            return fragment

    async def _next(self, timeout: float) -> dict | None:
        """The next message from the server, or None if none comes within `timeout`.

        (WebsocketCommunicator.receive_output cancels the application when it times out,
        which would break the socket for the rest of the test; receive_nothing does not.)
        """
        if await self.communicator.receive_nothing(timeout=timeout, interval=0.005):
            return None
        return await self.communicator.receive_output()

    def _note_close(self, message: dict) -> None:
        if message["type"] == "websocket.close":
            self.close_code = message.get("code")
            self.connected = False

    async def receive_swap(self, element_id: str, timeout: float = DEFAULT_TIMEOUT) -> Swap:
        """The next swap aimed at `#element_id`, in whichever frame it comes.

        A busy socket joins the events waiting for it into one frame, so a test that
        waits for one event's swap should not count frames: frames without such a swap
        are passed over (and named in the failure message if it never comes).
        """
        passed: list[list[str]] = []
        while True:
            try:
                fragment = await self.receive_fragment(timeout=timeout, skip=())
            except AssertionError as error:
                raise AssertionError(f"no swap of #{element_id}; passed over {passed}") from error
            if fragment.has_target(element_id):
                return fragment.target(element_id)
            passed.append(fragment.targets())

    async def receive_close(
        self, timeout: float = DEFAULT_TIMEOUT, skip: tuple[str, ...] = PASSED_OVER
    ) -> int | None:
        """Wait for the server to close the socket and return the close code; frames that
        only swap `skip` targets (presence, the connection status) are passed over."""
        while True:
            message = await self._next(timeout)
            if message is None:
                raise AssertionError(f"expected the socket to close within {timeout}s, got nothing")
            self._note_close(message)
            if message["type"] == "websocket.close":
                return self.close_code
            targets = Fragment(message.get("text") or "").targets()
            if not (targets and set(targets) <= set(skip)):
                raise AssertionError(f"expected the socket to close, got {describe(message)}")

    async def assert_nothing_received(
        self, timeout: float = QUIET_TIMEOUT, skip: tuple[str, ...] = PASSED_OVER
    ) -> None:
        """Fail, saying what came, if any frame (other than one that only swaps `skip`
        targets) arrives within `timeout`."""
        while not await self.communicator.receive_nothing(timeout=timeout):
            message = await self.communicator.receive_output()
            self._note_close(message)
            text = message.get("text")
            if text is not None:
                targets = Fragment(text).targets()
                if targets and set(targets) <= set(skip):
                    continue
            raise AssertionError(f"expected nothing more, got {describe(message)}")

    async def disconnect(self) -> None:
        if self.connected:
            self.connected = False
            await self.communicator.disconnect()


@sync_to_async
def session_cookie(user) -> bytes:
    """A session cookie header value signed in as `user`."""
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


async def communicator_for(
    application, path: str, user=None, origin: str = "http://testserver"
) -> WebsocketCommunicator:
    """A communicator for `path` as `user` (anonymous when None), through the full stack."""
    headers = [(b"origin", origin.encode())]
    if user is not None:
        headers.append((b"cookie", await session_cookie(user)))
    return WebsocketCommunicator(application, path, headers=headers)


async def open_room_socket(
    application, room, user=None, last_seq: int | None = 0, origin: str = "http://testserver"
) -> RoomSocket:
    """Connect to `room`'s socket as `user` and report `last_seq` as the page does."""
    communicator = await communicator_for(application, room.socket_path(), user, origin)
    return await RoomSocket(communicator).connect(last_seq=last_seq)


async def open_user_socket(application, user, unread: bool = False) -> RoomSocket:
    """Connect to the socket every other page opens for its user (`unread`: the room list's)."""
    path = "/ws/me/?unread=1" if unread else "/ws/me/"
    communicator = await communicator_for(application, path, user)
    return await RoomSocket(communicator).connect(last_seq=None)


# Capturing broadcasts -------------------------------------------------------------------


def group_name(target) -> str:
    """The group of a target: a Room, a user, live.SITE, or a group name as it stands."""
    return target if isinstance(target, str) else live.group_of(target)


@dataclass
class Broadcast:
    """One event published to a group while a capture was on."""

    group: str
    event: dict

    @property
    def type(self) -> str:
        return self.event["type"]

    def fragments(self, viewer: Viewer | None = None, room=None) -> list[Fragment]:
        """The frames a room page's socket sends for this event, as `viewer` (anonymous by
        default) on `room`'s page (any other room's page by default) is sent them."""
        return [Fragment(html) for html in render_event(self.event, viewer or Viewer(), room)]

    def fragment(self, viewer: Viewer | None = None, room=None) -> Fragment:
        """The one frame this event becomes for `viewer`; fails if it is not exactly one."""
        frames = self.fragments(viewer, room)
        if len(frames) != 1:
            raise AssertionError(
                f"expected {self.type} to {self.group} to render as 1 frame for "
                f"{viewer or Viewer()}, got {len(frames)}: {[f.targets() for f in frames]}"
            )
        return frames[0]


class Broadcasts(list):
    """Every `Broadcast` published while `capture_broadcasts()` was on, in order."""

    def to(self, target) -> Broadcasts:
        """The broadcasts to a Room, a user, live.SITE, or a group name."""
        group = group_name(target)
        return Broadcasts(b for b in self if b.group == group)

    def of_type(self, event_type: str) -> Broadcasts:
        return Broadcasts(b for b in self if b.type == event_type)

    def one(self, event_type: str | None = None, target=None) -> Broadcast:
        """The single broadcast (of this type, to this target); fails saying what came."""
        found = self.to(target) if target is not None else self
        found = found.of_type(event_type) if event_type else found
        if len(found) != 1:
            to = target is not None and f"to {group_name(target)}"
            expected = " ".join(filter(None, ["1", event_type, "broadcast", to]))
            raise AssertionError(
                f"expected {expected}, got {len(found)}; captured: {self.summary() or 'nothing'}"
            )
        return found[0]

    def fragments(self, viewer: Viewer | None = None, room=None) -> list[Fragment]:
        """Every frame these broadcasts become for `viewer`, in order."""
        return [frame for b in self for frame in b.fragments(viewer, room)]

    def summary(self) -> list[str]:
        """One "type -> group" line per broadcast."""
        return [f"{b.type} -> {b.group}" for b in self]


def capture_broadcasts(*targets, using: str = DEFAULT_DB_ALIAS) -> BroadcastCapture:
    """Record every event published while a block runs: `with` (sync or async code) or
    `async with` (async code).

        with capture_broadcasts(room) as captured:
            client.post(reverse("room_post", args=[room.slug]), {"message": "hi"})
        captured.one("room.message").fragment().target("messages")

    Given targets (Rooms, users, live.SITE, group names), only events to their groups are
    kept. Everything published is seen: by models and views (after commit), rooms.live,
    consumers, and the fan-out hub (presence, typing). Events still go out: connected
    sockets receive them as usual.

    After commit: in a test that runs inside a transaction (`django_db` without
    `transaction=True`), nothing commits, so the sync form runs the on-commit callbacks
    that the block registered when the block ends, as a commit would have.
    """
    return BroadcastCapture(*targets, using=using)


class BroadcastCapture:
    """The context manager `capture_broadcasts()` returns."""

    def __init__(self, *targets, using: str = DEFAULT_DB_ALIAS) -> None:
        self.groups = {group_name(target) for target in targets}
        self.using = using
        self.captured = Broadcasts()
        self._stack: contextlib.ExitStack | None = None

    def record(self, group: str, event: dict) -> None:
        if not self.groups or group in self.groups:
            self.captured.append(Broadcast(group, event))

    def listening(self) -> contextlib.ExitStack:
        """Record while this stack is open (no on-commit handling)."""
        original_apublish, original_hub_publish = events.apublish, Hub.publish

        async def apublish(group: str, event: dict) -> None:
            self.record(group, event)
            await original_apublish(group, event)

        async def hub_publish(hub: Hub, event: dict) -> None:
            self.record(event["group"], event)
            await original_hub_publish(hub, event)

        stack = contextlib.ExitStack()
        stack.enter_context(mock.patch.object(events, "apublish", apublish))
        stack.enter_context(mock.patch.object(Hub, "publish", hub_publish))
        return stack

    def __enter__(self) -> Broadcasts:
        self._stack = self.listening()
        # Entered last, so it runs first on exit: the callbacks publish while we listen.
        self._stack.enter_context(TestCase.captureOnCommitCallbacks(using=self.using, execute=True))
        return self.captured

    def __exit__(self, *exc_info) -> None:
        self._stack.close()

    async def __aenter__(self) -> Broadcasts:
        # Async code writes from database threads, whose commits publish as they happen.
        self._stack = self.listening()
        return self.captured

    async def __aexit__(self, *exc_info) -> None:
        self._stack.close()


def render_event(event: dict, viewer: Viewer, room=None) -> list[str]:
    """The frames a room page's socket of `viewer` on `room` sends for `event`, rendered by
    the socket's own handlers (rooms.consumers.ROOM_EVENTS) into its outbox, one frame
    per event (a busy socket joins several into one frame)."""
    handler = ROOM_EVENTS.get(event["type"])
    if handler is None:
        return []
    socket = RoomConsumer()
    socket.viewer = viewer
    # The page is live and shows everything before this event, so the event is sent.
    socket.outbox.seq = event.get("seq", 1) - 1
    socket.room = room or SimpleNamespace(slug="", title="", pk=0)
    sent: list[str] = []
    socket.end = lambda code, text=None: sent.append(text) if text else None
    socket.note_read = lambda: None
    handler(socket, event, {})
    sent += [text for _, _, text in socket.outbox.entries if isinstance(text, str)]
    return sent


@pytest.fixture
def broadcasts() -> Iterator[Broadcasts]:
    """Every broadcast of the test: `broadcasts.one("room.message", room)`.

    Events published after commit are seen when the commit happens: use it in tests with
    `django_db(transaction=True)`, or use `capture_broadcasts()` around the code instead.
    """
    capture = BroadcastCapture()
    with capture.listening():
        yield capture.captured


@pytest.fixture
def live_clock():
    """The clock of the test's hub: the real one. Override it with a
    `rooms.clock.ManualClock()` to drive presence, typing and budgets by hand."""
    return system_clock


@pytest.fixture
def fanout_hub(live_clock) -> Hub:
    """A fresh fan-out hub for this test, on the default channel layer and `live_clock`."""
    return Hub(clock=live_clock)


@pytest.fixture
def ws_application(fanout_hub: Hub):
    """The site's socket stack (origin check, auth, routes) fed by `fanout_hub`."""
    return websocket_application(hub=fanout_hub)


@pytest.fixture
async def room_socket(ws_application) -> Iterator:
    """Connect to a room's socket: `await room_socket(room, user=alice, last_seq=0)`.

    Every socket it opened is disconnected when the test ends.
    """
    opened: list[RoomSocket] = []

    async def connect(room, user=None, last_seq: int | None = 0, **kwargs) -> RoomSocket:
        application = kwargs.pop("application", ws_application)
        socket = await open_room_socket(application, room, user, last_seq, **kwargs)
        opened.append(socket)
        return socket

    yield connect
    for socket in opened:
        await socket.disconnect()


@pytest.fixture
async def user_socket(ws_application) -> Iterator:
    """Connect to a user's own socket: `await user_socket(alice, unread=True)`."""
    opened: list[RoomSocket] = []

    async def connect(user, unread: bool = False) -> RoomSocket:
        socket = await open_user_socket(ws_application, user, unread)
        opened.append(socket)
        return socket

    yield connect
    for socket in opened:
        await socket.disconnect()
