"""Pages while the database is away: a friendly 503, then back by themselves; and the
password-reset pages, offered only when mail is configured."""

import socket

import pytest
from bs4 import BeautifulSoup
from django.db import connections
from django.db.backends.postgresql.base import DatabaseWrapper
from django.urls import reverse

from rooms.models import Message

pytestmark = pytest.mark.django_db

DOWN_TEXT = "Roomcast cannot reach its database right now; try again in a moment."


def closed_port() -> int:
    """A local port nothing listens on (connections to it are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Outage:
    """Points the default database alias at a PostgreSQL server that refuses connections."""

    def __init__(self) -> None:
        self.original = connections["default"]
        self.down: DatabaseWrapper | None = None

    def start(self) -> None:
        settings_dict = {
            **self.original.settings_dict,
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "roomcast_down",
            "USER": "nobody",
            "PASSWORD": "",
            "HOST": "127.0.0.1",
            "PORT": str(closed_port()),
            "OPTIONS": {"connect_timeout": 2},
        }
        self.down = DatabaseWrapper(settings_dict, alias="default")
        connections["default"] = self.down

    def restore(self) -> None:
        connections["default"] = self.original
        if self.down is not None:
            self.down.close()
            self.down = None


@pytest.fixture
def outage():
    """`outage.start()`: the database goes away; `outage.restore()` (or the test's end):
    it is back."""
    outage = Outage()
    yield outage
    outage.restore()


@pytest.fixture
def database_down(outage):
    outage.start()
    return outage


def test_pages_answer_503_while_the_database_is_down(client, room, database_down):
    response = client.get("/")
    assert response.status_code == 503


def test_the_503_page_says_what_happened(client, room, database_down):
    page = BeautifulSoup(client.get(room.get_absolute_url()).content, "html.parser")
    assert page.select_one("[role=alert]").get_text() == DOWN_TEXT
    assert page.title.get_text() == "Try again in a moment · Roomcast"


def test_the_503_page_asks_to_retry_later(client, room, database_down):
    assert client.get("/")["Retry-After"] == "10"


def test_a_post_while_the_database_is_down_answers_503(client, room, alice, outage):
    client.force_login(alice)
    outage.start()
    response = client.post(reverse("room_post", args=[room.slug]), {"message": "hi"})
    assert response.status_code == 503


def test_pages_come_back_when_the_database_does(client, room, database_down):
    assert client.get("/").status_code == 503
    database_down.restore()
    response = client.get("/")
    assert response.status_code == 200
    page = BeautifulSoup(response.content, "html.parser")
    assert [a.get_text() for a in page.select("#room-list a")] == ["Lobby"]


def test_other_errors_are_not_turned_into_503(client, room, monkeypatch):
    from rooms import views

    def broken(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(views, "visible_rooms", broken)
    client.raise_request_exception = False
    assert client.get("/").status_code == 500


# Password reset


def test_password_reset_is_not_found_without_mail(client, settings):
    settings.ROOMCAST_EMAIL_ENABLED = False
    assert client.get(reverse("password_reset")).status_code == 404


def test_password_reset_done_is_not_found_without_mail(client, settings):
    settings.ROOMCAST_EMAIL_ENABLED = False
    assert client.get(reverse("password_reset_done")).status_code == 404


def test_password_reset_confirm_is_not_found_without_mail(client, settings):
    settings.ROOMCAST_EMAIL_ENABLED = False
    url = reverse("password_reset_confirm", args=["MQ", "set-password"])
    assert client.get(url).status_code == 404


def test_login_page_offers_no_reset_without_mail(client, settings):
    settings.ROOMCAST_EMAIL_ENABLED = False
    page = BeautifulSoup(client.get(reverse("login")).content, "html.parser")
    assert page.select(f"a[href='{reverse('password_reset')}']") == []


def test_login_page_offers_reset_with_mail(client, settings):
    settings.ROOMCAST_EMAIL_ENABLED = True
    page = BeautifulSoup(client.get(reverse("login")).content, "html.parser")
    link = page.select_one(f"a[href='{reverse('password_reset')}']")
    assert link.get_text() == "Forgot your password?"


def test_password_reset_answers_with_mail(client, settings):
    settings.ROOMCAST_EMAIL_ENABLED = True
    assert client.get(reverse("password_reset")).status_code == 200


# Limits while the shared store (Redis) is away


def test_plain_posts_stay_rate_limited_while_redis_is_down(client, room, alice, settings):
    settings.ROOMCAST_PRESENCE_URL = f"redis://127.0.0.1:{closed_port()}/0"
    settings.ROOMCAST_POST_RATE_LIMIT = 2
    client.force_login(alice)
    url = reverse("room_post", args=[room.slug])
    statuses = [client.post(url, {"message": f"m{n}"}).status_code for n in range(3)]
    assert statuses == [302, 302, 429]
    assert Message.objects.count() == 2
