"""Property-based tests: arbitrary frames and form values never break the socket or the
site, never store anything wrongly, and escaping holds for any text."""

import json
import logging

import pytest
from asgiref.sync import async_to_sync
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rooms import consumers, fragments
from rooms.clock import system
from rooms.fragments import Viewer
from rooms.limits import TokenBucket
from rooms.models import Message
from rooms.testing import Fragment

pytestmark = pytest.mark.django_db(transaction=True)

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Any JSON value, and form-like objects whose fields are the ones the socket reads.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "action": st.sampled_from(["sync", "post", "typing", "edit", "save", "cancel", "delete"])
        | st.text(max_size=10)
        | json_values,
        "message": st.text(max_size=300) | json_values,
        "message_id": st.integers() | st.text(max_size=10) | json_values,
        "last_seq": st.integers() | st.text(max_size=10) | json_values,
    },
)
frames = (
    st.text(max_size=200)
    | json_values.map(json.dumps)
    | fields.map(json.dumps)
    | st.integers(min_value=30_000, max_value=40_000).map(lambda n: '{"message": "%s"}' % ("x" * n))
)


class Page:
    """A room consumer wired to a list instead of a network connection."""

    def __init__(self, room, user):
        self.sent: list[dict] = []
        self.consumer = consumers.RoomConsumer()
        self.consumer.scope = {"user": user, "type": "websocket"}
        self.consumer.base_send = self._record
        self.consumer.user = user
        self.consumer.room = room
        self.consumer.viewer = Viewer(user_id=user.pk, moderator=room.is_moderator(user))
        # Budgets are tested in test_limits.py: here every frame is within it.
        self.consumer.budget = TokenBucket(rate=0, burst=float("inf"), clock=system)

    async def _record(self, message):
        self.sent.append(message)

    def receive(self, frame: str) -> list[dict]:
        self.sent = []
        async_to_sync(self.consumer.receive)(text_data=frame)
        return self.sent


@pytest.fixture
def page(room, alice):
    return Page(room, alice)


@given(frame=frames)
@FUZZ
def test_any_frame_gets_html_or_nothing_and_no_server_error(page, room, caplog, frame):
    caplog.set_level(logging.ERROR)
    before = Message.objects.filter(room=room).count()
    for message in page.receive(frame):
        if message["type"] == "websocket.send":
            fragment = Fragment(message["text"])
            assert all(fragment.targets()), f"a top-level element without an id: {message}"
        else:  # only a revoked user is closed; alice never is
            pytest.fail(f"the socket was closed: {message}")
    stored = Message.objects.filter(room=room).order_by("-seq")
    assert stored.count() - before in (0, 1)
    if stored.count() > before:
        payload = json.loads(frame)
        assert stored.first().body == payload["message"].strip()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# Control characters other than newline are left out: an HTML parser rewrites CR and FF as
# browsers do, which is not the escaping's doing.
TEXT = st.characters(blacklist_categories=("Cc", "Cs")) | st.just("\n")


@given(body=st.text(TEXT, min_size=1, max_size=500))
@FUZZ
def test_escaping_holds_for_any_text(body):
    message = {
        "id": 1,
        "seq": 1,
        "changed_seq": 0,
        "author": "<b>alice</b>",
        "author_id": 1,
        "body": body,
        "edited": False,
        "deleted": False,
        "created": 0.0,
    }
    swap = Fragment(fragments.new_messages([message], Viewer(), 1)).target("messages")
    paragraph = swap.select(".body")[0]
    assert paragraph.get_text() == body
    # Only what the message filter adds: mention marks, and links that are safe to follow.
    assert all(
        (c.name, c.get("class")) == ("mark", ["mention"])
        or (c.name == "a" and c["rel"] == ["noopener", "nofollow", "ugc"])
        for c in paragraph.find_all(True)
    )
    assert swap.select(".author")[0].get_text() == "<b>alice</b>"


@given(values=st.dictionaries(st.sampled_from(["message", "other"]), st.text(max_size=300)))
@FUZZ
def test_any_http_post_is_stored_right_or_refused(client, room, alice, values):
    client.force_login(alice)
    before = Message.objects.count()
    response = client.post(reverse("room_post", args=[room.slug]), values)
    assert response.status_code in (302, 400, 429)
    if response.status_code == 302:
        assert Message.objects.order_by("-pk").first().body == values["message"].strip()
    else:
        assert Message.objects.count() == before
