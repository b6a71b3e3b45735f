"""Real-browser tests: Roomcast served by daphne, driven by Playwright in Debian's Chromium."""

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.servers import ROOT, Server, free_port

# The sizes the pages are tried at: a laptop and a phone.
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
SIZES: dict[str, dict[str, Any]] = {"desktop": DESKTOP, "phone": PHONE}

# A third demo user, and a room with a history longer than a screen.
EXTRA_DATA = """
from django.contrib.auth import get_user_model
from rooms.models import Room, post_message
carol = get_user_model().objects.create_user("carol", password="roomcast-carol")
alice = get_user_model().objects.get(username="alice")
bob = get_user_model().objects.get(username="bob")
room = Room.objects.create(title="History", owner=alice)
for n in range(40):
    post_message(room, (alice, bob, carol)[n % 3], f"history line {n}")
"""

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class LiveSite:
    """The site on SQLite and the in-memory layer (the embedded default), with demo data;
    `env` adds settings (e.g. REDIS_URL for the Redis layer)."""

    def __init__(self, tmp: Path, **env: str) -> None:
        self.port = free_port()
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ROOMCAST_"))
        }
        self.env.pop("REDIS_URL", None)
        self.env.update(
            DATABASE_URL=f"sqlite:///{tmp / 'browser.sqlite3'}",
            DJANGO_SECRET_KEY="browser-tests-only",
            DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
            DJANGO_SSL_REDIRECT="0",
            DJANGO_SECURE_COOKIES="0",
            **env,
        )
        self.manage("migrate", "--no-input", "-v0")
        self.manage("seed_demo")
        self.manage("shell", "-v", "0", "-c", EXTRA_DATA)
        self.server = self.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True,
            text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    def start(self) -> Server:
        return Server(self.env, self.port)

    def stop(self) -> None:
        """Kill the server process, as a crash would; `resume()` starts it again."""
        self.server.kill()

    def resume(self) -> None:
        self.server = self.start()

    def shell(self, code: str) -> str:
        """Run Python in a `manage.py shell` on the site's database; its printed output."""
        return self.manage("shell", "-v", "0", "-c", code).strip()

    def restart(self, while_down=lambda: None) -> None:
        """Kill the server (as a crash or a deploy would), run `while_down`, start it again."""
        self.server.kill()
        while_down()
        self.server = self.start()


@pytest.fixture
def live_site(tmp_path):
    site = LiveSite(tmp_path)
    yield site
    site.server.kill()


@pytest.fixture(scope="module")
def browser():
    """Chromium for one module at a time: Playwright's sync API keeps an event loop running
    while it is open, which would stop later async tests from starting theirs."""
    chromium = shutil.which("chromium")
    if chromium is None:
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must run the browser tests")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def sign_in(browser, live_site):
    """Open a new browser context signed in as a demo user: `page = sign_in("alice")`."""
    contexts = []

    def open_page(username: str, size: str = "desktop"):
        context = browser.new_context(**SIZES[size])
        contexts.append(context)
        page = context.new_page()
        page.goto(f"{live_site.base}/accounts/login/")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", f"roomcast-{username}")
        page.click("button[type=submit]")
        page.wait_for_url(f"{live_site.base}/")
        return page

    yield open_page
    for context in contexts:
        context.close()
