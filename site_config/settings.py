"""Roomcast settings: one module, read from environment variables.

The embedded default needs nothing running (SQLite, in-memory channel layer).
`DATABASE_URL` switches to PostgreSQL and `REDIS_URL` to the Redis channel layer.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    """Read a yes/no environment variable."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: list[str]) -> list[str]:
    """Read a comma-separated environment variable."""
    value = os.environ.get(name, "")
    return [item.strip() for item in value.split(",") if item.strip()] or default


DEBUG = env_bool("DJANGO_DEBUG", False)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        # Fail loudly: a production process must never run on a key from the repository.
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. Set it, or set DJANGO_DEBUG=1 for local development."
        )
    SECRET_KEY = "django-insecure-roomcast-development-only"

ALLOWED_HOSTS = env_list(
    "DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else []
)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "csp",
    "template_partials.apps.SimpleAppConfig",
    "rooms",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    # Serves /static/ from daphne itself, in development and production alike.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "site_config.urls"
ASGI_APPLICATION = "site_config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            # Cached loaders also in development: live pushes render on the hot path.
            "loaders": [
                (
                    "template_partials.loader.Loader",
                    [
                        (
                            "django.template.loaders.cached.Loader",
                            [
                                "django.template.loaders.filesystem.Loader",
                                "django.template.loaders.app_directories.Loader",
                            ],
                        )
                    ],
                )
            ],
            "builtins": ["template_partials.templatetags.partials"],
        },
    }
]

DATABASES = {
    "default": dj_database_url.config(
        env="DATABASE_URL",
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default serves many sockets from one process: write-ahead logging lets
    # readers go on during a write, IMMEDIATE transactions queue writers instead of failing
    # with "database is locked", and synchronous=NORMAL is safe with WAL and spares an fsync
    # per commit.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
# Every Redis key Roomcast makes starts with this (several sites can share one Redis).
REDIS_PREFIX = os.environ.get("ROOMCAST_REDIS_PREFIX", "roomcast")
if REDIS_URL:
    # The pub/sub layer: one PUBLISH per group event, fanned out locally by each process.
    # It can drop events while Redis is down; per-room sequence numbers catch that up.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": REDIS_PREFIX},
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            # One consumer (the process's fan-out hub) reads each room's events; a
            # generous capacity keeps bursts from being dropped before it reads them.
            "CONFIG": {"capacity": 10_000},
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "room_list"
LOGOUT_REDIRECT_URL = "room_list"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# WhiteNoise serves static files straight from the apps and static/ (no collectstatic step
# needed); set DJANGO_STATIC_ROOT to serve a collected copy instead.
STATIC_ROOT = os.environ.get("DJANGO_STATIC_ROOT") or None
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# Roomcast's own limits.
ROOMCAST_MESSAGE_MAX_LENGTH = 4000
ROOMCAST_HISTORY_LENGTH = 50
# A socket further behind than this is re-rendered from the latest history instead of
# being sent every message it missed.
ROOMCAST_CATCHUP_LIMIT = 200
# Presence: each process refreshes its sockets' entries every HEARTBEAT seconds; an entry
# not refreshed for TTL seconds (its process died) drops out. Shared through Redis when set.
ROOMCAST_PRESENCE_URL = REDIS_URL
ROOMCAST_PRESENCE_PREFIX = REDIS_PREFIX
ROOMCAST_PRESENCE_HEARTBEAT = float(os.environ.get("ROOMCAST_PRESENCE_HEARTBEAT", 5))
ROOMCAST_PRESENCE_TTL = float(os.environ.get("ROOMCAST_PRESENCE_TTL", 20))
# Each process compares its rooms' sequence numbers with the database this often (seconds),
# to find writes whose live events never reached it.
ROOMCAST_RESYNC_INTERVAL = float(os.environ.get("ROOMCAST_RESYNC_INTERVAL", 1))
# Typing: at most one event per user per THROTTLE seconds; shown until TIMEOUT after the last.
ROOMCAST_TYPING_THROTTLE = 2.0
ROOMCAST_TYPING_TIMEOUT = 5.0
# The dashboard is recomputed and pushed at most this often (seconds), however busy.
ROOMCAST_DASHBOARD_INTERVAL = 1.0
# Floods: each user may post (or edit or delete) at most RATE_LIMIT times per RATE_WINDOW
# seconds, across all their sockets and processes, and keep MAX_SOCKETS pages open.
ROOMCAST_POST_RATE_LIMIT = int(os.environ.get("ROOMCAST_POST_RATE_LIMIT", 20))
ROOMCAST_POST_RATE_WINDOW = float(os.environ.get("ROOMCAST_POST_RATE_WINDOW", 10))
ROOMCAST_MAX_SOCKETS_PER_USER = int(os.environ.get("ROOMCAST_MAX_SOCKETS_PER_USER", 30))
# /dev/stats/ (memory, sockets, groups, presence entries), for bench/soak.py.
ROOMCAST_STATS = env_bool("ROOMCAST_STATS", False)
# A room page writes how far its user has read at most this often (seconds).
ROOMCAST_READ_MARK_INTERVAL = 5.0

# A strict Content-Security-Policy: the site runs no script but htmx and its ws extension,
# served from our own origin, and no inline script or style anywhere (the page tells htmx
# not to inject its indicator styles, in base.html).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# Production mode (debug off): HTTPS only, secure cookies, strict headers; `manage.py check
# --deploy` is clean. DJANGO_SECURE_COOKIES=0 and DJANGO_SSL_REDIRECT=0 serve plain HTTP
# behind a proxy that terminates TLS elsewhere, or for local tests.
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", 31_536_000))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_HTTPONLY = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "rooms": {"handlers": ["console"], "level": os.environ.get("ROOMCAST_LOG_LEVEL", "INFO")},
    },
}

# --- core: the live core's limits and intervals ---
# Entries a socket's outbox holds before it overflows (dropped; the page catches up from
# the database), and overflows in a row (no frame written between) before it is closed.
ROOMCAST_OUTBOX_LIMIT = int(os.environ.get("ROOMCAST_OUTBOX_LIMIT", 1000))
ROOMCAST_OUTBOX_MAX_OVERFLOWS = int(os.environ.get("ROOMCAST_OUTBOX_MAX_OVERFLOWS", 3))
# Catch-up reads running at once per process (sockets asking for one range share one).
ROOMCAST_CATCHUP_CONCURRENCY = int(os.environ.get("ROOMCAST_CATCHUP_CONCURRENCY", 4))
# How often each process re-checks who may read its private rooms (seconds).
ROOMCAST_ACCESS_RECHECK = float(os.environ.get("ROOMCAST_ACCESS_RECHECK", 10))
# How often every socket is re-sent the connection status (seconds).
ROOMCAST_LIVE_BEAT = float(os.environ.get("ROOMCAST_LIVE_BEAT", 5))
# Inbound frames of every kind per socket: a burst, refilled at a rate per second.
ROOMCAST_FRAME_BURST = float(os.environ.get("ROOMCAST_FRAME_BURST", 40))
ROOMCAST_FRAME_RATE = float(os.environ.get("ROOMCAST_FRAME_RATE", 10))
# Open sockets of anonymous visitors per client address (as the server reports it).
ROOMCAST_MAX_ANONYMOUS_SOCKETS_PER_ADDRESS = int(
    os.environ.get("ROOMCAST_MAX_ANONYMOUS_SOCKETS_PER_ADDRESS", 50)
)
# Bytes daphne may hold for a client that does not read before the socket is dropped.
ROOMCAST_SOCKET_BUFFER_LIMIT = int(os.environ.get("ROOMCAST_SOCKET_BUFFER_LIMIT", 1 << 20))
