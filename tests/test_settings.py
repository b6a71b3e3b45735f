"""Settings come from the environment and fail loudly when production values are missing."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_settings(**env) -> subprocess.CompletedProcess:
    """Import the settings in a fresh interpreter with exactly these variables set."""
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "REDIS_"))
    }
    script = (
        "import site_config.settings as s; "
        "print(s.DEBUG, s.DATABASES['default']['ENGINE'], s.CHANNEL_LAYERS['default']['BACKEND'])"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
    )


def test_settings_refuse_to_start_without_secret_key_in_production():
    result = load_settings()
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in result.stderr


def test_settings_default_is_embedded():
    result = load_settings(DJANGO_DEBUG="1")
    assert result.stdout.split() == [
        "True",
        "django.db.backends.sqlite3",
        "channels.layers.InMemoryChannelLayer",
    ]


def test_settings_database_url_selects_postgresql():
    result = load_settings(DJANGO_SECRET_KEY="k", DATABASE_URL="postgres://u@127.0.0.1:5432/x")
    assert result.stdout.split()[1] == "django.db.backends.postgresql"


def test_settings_redis_url_selects_redis_layer():
    result = load_settings(DJANGO_SECRET_KEY="k", REDIS_URL="redis://127.0.0.1:6379/0")
    assert result.stdout.split()[2] == "channels_redis.pubsub.RedisPubSubChannelLayer"
