"""The profile page: a user's time zone and email digest setting (rooms/profile_views.py)."""

import pytest
from bs4 import BeautifulSoup, Tag

from rooms.models import Profile

pytestmark = pytest.mark.django_db


def form_of(response) -> Tag:
    form = BeautifulSoup(response.content, "html.parser").select_one("form.profile-form")
    assert form is not None, "no profile form on the page"
    return form


def test_profile_needs_a_signed_in_user(client):
    response = client.get("/accounts/profile/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_profile_shows_labelled_fields_with_utc_by_default(client, alice):
    client.force_login(alice)
    form = form_of(client.get("/accounts/profile/"))
    select = form.select_one("select[name=time_zone]")
    assert form.select_one(f"label[for={select['id']}]").get_text() == "Time zone"
    assert select.select_one("option[selected]")["value"] == "UTC"
    assert form.select_one("input[name=email_digest]").has_attr("checked")


def test_profile_saves_a_time_zone(client, alice):
    client.force_login(alice)
    response = client.post("/accounts/profile/", {"time_zone": "Europe/Paris"})
    assert response.status_code == 302
    profile = Profile.objects.get(user=alice)
    assert (profile.time_zone, profile.email_digest) == ("Europe/Paris", False)


def test_profile_refuses_an_unknown_time_zone_and_says_why(client, alice):
    client.force_login(alice)
    response = client.post("/accounts/profile/", {"time_zone": "Mars/Olympus"})
    assert response.status_code == 400
    [error] = form_of(response).select(".error")
    assert "Mars/Olympus is not one of the available choices" in error.get_text()
    assert not Profile.objects.filter(user=alice, time_zone="Mars/Olympus").exists()
