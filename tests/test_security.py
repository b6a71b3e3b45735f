"""Production headers, the Content-Security-Policy, and `manage.py check --deploy`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from rooms.models import post_message

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent


def csp(response) -> dict[str, str]:
    policy = response["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in policy.split(";") if part.strip())


def test_pages_send_a_strict_content_security_policy(client, room):
    policy = csp(client.get(room.get_absolute_url()))
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["object-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"


def test_pages_need_no_inline_script_or_style(client, room, alice):
    post_message(room, alice, "<script>alert(1)</script> style=color:red")
    client.force_login(alice)
    for url in ("/", room.get_absolute_url(), "/dashboard/"):
        page = BeautifulSoup(client.get(url).content, "html.parser")
        assert all(script.get("src") for script in page.select("script")), url
        assert page.select("[style]") == [] and page.select("style") == [], url
        assert not [el for el in page.find_all(True) if any(a.startswith("on") for a in el.attrs)]


def test_htmx_is_told_not_to_inject_styles_or_eval(client, room):
    page = BeautifulSoup(client.get(room.get_absolute_url()).content, "html.parser")
    config = page.select_one("meta[name=htmx-config]")["content"]
    assert '"includeIndicatorStyles": false' in config and '"allowEval": false' in config


def test_the_only_scripts_are_htmx_and_its_ws_extension(client, room):
    page = BeautifulSoup(client.get(room.get_absolute_url()).content, "html.parser")
    sources = [script["src"] for script in page.select("script")]
    assert [s.rsplit("/", 1)[-1] for s in sources] == ["htmx-2.min.js", "hx-ws-2.min.js"]


def test_security_headers(client):
    response = client.get("/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


def test_check_deploy_is_clean_in_production_mode():
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "REDIS_"))
    }
    env.update(
        DJANGO_SECRET_KEY="a-long-random-production-key-" + "x7Kq2vP9mZ4tR8wY1nB6cJ3hL5sD0fG",
        DJANGO_ALLOWED_HOSTS="roomcast.example",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout
