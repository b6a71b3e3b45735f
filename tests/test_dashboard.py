"""The live dashboard: figures, valid SVG charts, and pushes coalesced to one per interval."""

import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from bs4 import BeautifulSoup
from channels.db import database_sync_to_async
from django.utils import timezone

from rooms import dashboard
from rooms.models import Message, post_message
from rooms.testing import Fragment, RoomSocket, communicator_for

pytestmark = pytest.mark.django_db(transaction=True)

SVG = "{http://www.w3.org/2000/svg}"


def page(client) -> BeautifulSoup:
    return BeautifulSoup(client.get("/dashboard/").content, "html.parser")


def svg_elements(row) -> list[ET.Element]:
    """Each <svg> of a table row, parsed as XML (which fails on invalid SVG)."""
    return [ET.fromstring(str(svg)) for svg in row.select("svg")]


@pytest.fixture
async def dashboard_socket(ws_application):
    socket = RoomSocket(await communicator_for(ws_application, "/ws/dashboard/"))
    await socket.connect(last_seq=None)
    yield socket
    await socket.disconnect()


def test_dashboard_lists_public_rooms_with_last_hour_counts(client, room, alice, make_room):
    make_room("Secret", is_private=True, owner=alice)
    post_message(room, alice, "one")
    post_message(room, alice, "two")
    row = page(client).select_one(f"#dashboard-room-{room.pk}")
    assert row.select_one("a").get_text() == "Lobby"
    assert row.select_one(".count").get_text() == "2"
    assert "Secret" not in page(client).select_one("#dashboard").get_text()


def test_sparkline_is_valid_svg_carrying_per_minute_values(client, room, alice):
    post_message(room, alice, "now")
    earlier = post_message(room, alice, "ten minutes ago")
    Message.objects.filter(pk=earlier.pk).update(created=timezone.now() - timedelta(minutes=10))
    spark, _ = svg_elements(page(client).select_one(f"#dashboard-room-{room.pk}"))
    values = [int(v) for v in spark.get("data-values").split(",")]
    assert spark.tag == f"{SVG}svg"
    assert (len(values), values[-1], values[-11], sum(values)) == (60, 1, 1, 2)
    assert len(spark.find(f"{SVG}polyline").get("points").split()) == 60


def test_bar_is_valid_svg_scaled_to_the_busiest_room(client, room, alice, make_room):
    quiet = make_room("Quiet")
    for body in "abcd":
        post_message(room, alice, body)
    post_message(quiet, alice, "x")
    _, busy_bar = svg_elements(page(client).select_one(f"#dashboard-room-{room.pk}"))
    _, quiet_bar = svg_elements(page(client).select_one(f"#dashboard-room-{quiet.pk}"))
    busy, small = busy_bar.find(f"{SVG}rect"), quiet_bar.find(f"{SVG}rect")
    assert (busy.get("data-value"), busy.get("width")) == ("4", "120")
    assert (small.get("data-value"), small.get("width")) == ("1", "30")


def test_messages_older_than_an_hour_are_left_out(room, alice):
    old = post_message(room, alice, "old")
    Message.objects.filter(pk=old.pk).update(created=timezone.now() - timedelta(minutes=61))
    [figures] = dashboard.room_figures()
    assert figures.last_hour == 0


async def test_dashboard_socket_gets_the_figures(room, dashboard_socket):
    fragment = await dashboard_socket.receive_fragment()
    assert fragment.target("dashboard").element.select_one("#total-rooms").get_text() == "1"


class RecordingSocket:
    def __init__(self):
        self.sent: list[str] = []

    def push(self, html: str) -> None:
        self.sent.append(html)


async def test_a_burst_of_messages_is_one_update(fanout_hub, room, alice):
    # The feed computes on its own clock (one tick per interval), never per message.
    feed, socket = dashboard.DashboardFeed(fanout_hub), RecordingSocket()
    feed.sockets.add(socket)
    for n in range(25):
        await database_sync_to_async(post_message)(room, alice, f"burst {n}")
    assert socket.sent == []
    await feed.tick()
    [update] = socket.sent
    assert Fragment(update).select("#total-messages")[0].get_text() == "25"


async def test_an_unchanged_dashboard_is_not_pushed_again(fanout_hub, room):
    feed, socket = dashboard.DashboardFeed(fanout_hub), RecordingSocket()
    feed.sockets.add(socket)
    await feed.tick()
    await feed.tick()
    assert len(socket.sent) == 1


async def test_people_online_come_from_presence(room, alice, dashboard_socket, room_socket):
    await dashboard_socket.receive_fragment()
    await room_socket(room, user=alice)
    update = await dashboard_socket.receive_fragment()
    assert update.target("dashboard").element.select_one("#total-online").get_text() == "1"
    assert update.select(f"#dashboard-room-{room.pk} .online")[0].get_text() == "1"


def test_dashboard_shows_the_job_queue(client, room, alice):
    """Waiting, running and failed-in-the-last-hour jobs, counted from the job table."""
    from django_tasks_db.models import DBTaskResult

    from rooms import tasks

    tasks.ping.enqueue(1)
    tasks.ping.enqueue(2)
    DBTaskResult.objects.filter(pk=DBTaskResult.objects.first().pk).update(status="RUNNING")
    queue = page(client).select_one("#job-queue")
    assert queue.select_one("#jobs-waiting").get_text() == "1"
    assert queue.select_one("#jobs-running").get_text() == "1"
    assert queue.select_one("#jobs-failed").get_text() == "0"
