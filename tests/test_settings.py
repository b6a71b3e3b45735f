"""Settings come from the environment and fail loudly when production values are missing."""

import json
import logging
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


def evaluate(expression: str, **env) -> subprocess.CompletedProcess:
    """Print one expression over the settings module `s`, imported with exactly these variables."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DATABASE_", "REDIS_", "ROOMCAST_"))
    }
    return subprocess.run(
        [sys.executable, "-c", f"import site_config.settings as s; print({expression})"],
        cwd=ROOT,
        env={**clean, "DJANGO_SECRET_KEY": "k", **env},
        capture_output=True,
        text=True,
    )


def test_settings_ignore_x_forwarded_proto_by_default():
    result = evaluate("getattr(s, 'SECURE_PROXY_SSL_HEADER', None)")
    assert result.stdout.strip() == "None"


def test_settings_trust_x_forwarded_proto_when_told():
    result = evaluate("s.SECURE_PROXY_SSL_HEADER", DJANGO_TRUST_X_FORWARDED_PROTO="1")
    assert result.stdout.strip() == "('HTTP_X_FORWARDED_PROTO', 'https')"


def test_settings_postgresql_uses_a_bounded_pool_by_default():
    result = evaluate(
        "s.DATABASES['default']['OPTIONS']['pool']['max_size'],"
        " s.DATABASES['default']['CONN_MAX_AGE'], s.DATABASES['default']['CONN_HEALTH_CHECKS']",
        DATABASE_URL="postgres://u@127.0.0.1:5432/x",
    )
    assert result.stdout.split() == ["10", "0", "True"]


def test_settings_pool_can_be_turned_off_for_persistent_connections():
    result = evaluate(
        "'pool' in s.DATABASES['default'].get('OPTIONS', {}),"
        " s.DATABASES['default']['CONN_MAX_AGE']",
        DATABASE_URL="postgres://u@127.0.0.1:5432/x",
        DJANGO_DB_POOL="0",
        DJANGO_CONN_MAX_AGE="60",
    )
    assert result.stdout.split() == ["False", "60"]


def test_settings_refuse_a_pool_with_persistent_connections():
    result = evaluate("1", DATABASE_URL="postgres://u@127.0.0.1:5432/x", DJANGO_CONN_MAX_AGE="60")
    assert "DJANGO_CONN_MAX_AGE must be 0 with DJANGO_DB_POOL=1" in result.stderr


def test_settings_sqlite_has_no_pool():
    result = evaluate("'pool' in s.DATABASES['default']['OPTIONS']")
    assert result.stdout.strip() == "False"


def test_settings_refuse_a_metrics_allow_entry_that_is_no_address():
    result = evaluate("1", ROOMCAST_METRICS_ALLOW="10.0.0.0/8,localhost")
    assert "ROOMCAST_METRICS_ALLOW" in result.stderr
    assert result.returncode != 0


def test_settings_metrics_allow_is_empty_by_default():
    assert evaluate("s.ROOMCAST_METRICS_ALLOW").stdout.strip() == "[]"


def log_socket_close(**env) -> str:
    """What one `rooms.sockets` line with extra fields looks like on stderr."""
    script = (
        "import django, logging; django.setup(); "
        "logging.getLogger('rooms.sockets').info('socket closed', extra="
        "{'room': 'lobby', 'user': 7, 'duration': 12.5, 'code': 4401})"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ROOMCAST_"))},
            "DJANGO_SETTINGS_MODULE": "site_config.settings",
            "DJANGO_SECRET_KEY": "k",
            **env,
        },
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_logs_are_json_lines_with_extra_fields_when_asked():
    line = json.loads(log_socket_close(ROOMCAST_LOG_JSON="1"))
    fields = ("level", "logger", "message", "room", "user", "duration", "code")
    assert {k: line[k] for k in fields} == {
        "level": "INFO",
        "logger": "rooms.sockets",
        "message": "socket closed",
        "room": "lobby",
        "user": 7,
        "duration": 12.5,
        "code": 4401,
    }
    assert "timestamp" in line


def test_logs_are_plain_text_by_default():
    output = log_socket_close()
    assert output.rstrip().endswith("INFO rooms.sockets: socket closed")
    assert not output.startswith("{")


def test_logs_write_each_line_once():
    assert log_socket_close(ROOMCAST_LOG_JSON="1").count("socket closed") == 1
    assert log_socket_close().count("socket closed") == 1


def test_logs_of_django_itself_are_json_lines_too():
    script = "import django, logging; django.setup(); logging.getLogger('django.request').error('')"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ROOMCAST_"))},
        "DJANGO_SETTINGS_MODULE": "site_config.settings",
        "DJANGO_SECRET_KEY": "k",
        "ROOMCAST_LOG_JSON": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert json.loads(result.stderr)["logger"] == "django.request"


def test_logs_of_rooms_reach_the_root_logger(caplog):
    """Tests (caplog) and any root handler see Roomcast's records."""
    logging.getLogger("rooms.sockets").warning("socket closed")
    assert [record.name for record in caplog.records] == ["rooms.sockets"]


def test_settings_password_hashers_are_djangos_by_default():
    result = evaluate("getattr(s, 'PASSWORD_HASHERS', 'default')")
    assert result.stdout.strip() == "default"


def test_settings_password_hashers_come_from_the_environment():
    hashers = "django.contrib.auth.hashers.MD5PasswordHasher"
    result = evaluate("s.PASSWORD_HASHERS", DJANGO_PASSWORD_HASHERS=hashers)
    assert result.stdout.strip() == str([hashers])
