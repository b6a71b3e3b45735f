"""Signing up: usernames that only look like an existing one (homoglyphs) are refused."""

import pytest
from bs4 import BeautifulSoup
from django.contrib.auth import get_user_model

from rooms.admin import LookalikeChangeForm, LookalikeCreationForm
from rooms.usernames import skeleton

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-pass-phrase"


def sign_up(client, username: str):
    return client.post(
        "/accounts/signup/", {"username": username, "password1": PASSWORD, "password2": PASSWORD}
    )


def username_errors(response) -> list[str]:
    page = BeautifulSoup(response.content, "html.parser")
    return [li.get_text() for li in page.select("form .errorlist li")]


@pytest.mark.parametrize(
    "lookalike",
    [
        "\u0430lice",  # Cyrillic а
        "al\u0456ce",  # Cyrillic і
        "Al\u0456ce",  # capital A, Cyrillic і
        "aIice",  # capital I for l
    ],
)
def test_signup_refuses_a_lookalike_of_an_existing_username(client, alice, lookalike):
    response = sign_up(client, lookalike)
    assert response.status_code == 200
    assert username_errors(response) != []
    assert get_user_model().objects.count() == 1


def test_signup_says_which_username_it_looks_like(client, alice):
    response = sign_up(client, "\u0430lice")
    assert username_errors(response) == [
        "That username looks too much like 'alice', which is taken: choose another."
    ]


def test_signup_accepts_a_username_that_only_resembles_one(client, alice):
    assert sign_up(client, "alicia").status_code == 302
    assert get_user_model().objects.filter(username="alicia").exists()


def test_signup_accepts_non_latin_usernames_without_a_lookalike(client, alice):
    assert sign_up(client, "\u0430\u043d\u044f").status_code == 302  # аня


def test_skeletons_of_lookalikes_are_equal():
    assert skeleton("b0b") == skeleton("bob") == skeleton("\uff42\uff4f\uff42")  # ｂｏｂ


def test_admin_creation_form_refuses_a_lookalike(alice):
    form = LookalikeCreationForm(
        data={
            "username": "\u0430lice",
            "password1": PASSWORD,
            "password2": PASSWORD,
            "usable_password": "true",
        }
    )
    assert not form.is_valid()
    assert form.errors["username"] == [
        "That username looks too much like 'alice', which is taken: choose another."
    ]


def test_admin_change_form_refuses_renaming_to_a_lookalike(alice, bob):
    form = LookalikeChangeForm(
        instance=bob,
        data={"username": "\u0430lice", "date_joined": "2026-01-01 00:00:00"},
    )
    assert not form.is_valid()
    assert "username" in form.errors


def test_admin_change_form_lets_a_user_keep_their_own_name(alice):
    form = LookalikeChangeForm(
        instance=alice, data={"username": "alice", "date_joined": "2026-01-01 00:00:00"}
    )
    assert "username" not in form.errors
