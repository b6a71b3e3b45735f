"""Roomcast settings: one module, read from environment variables.

The embedded default needs nothing running (SQLite, in-memory channel layer).
`DATABASE_URL` switches to PostgreSQL and `REDIS_URL` to the Redis channel layer.
"""

import ipaddress
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
    # Django's Tasks API (django.tasks from Django 6) and its database backend: background jobs.
    "django_tasks",
    "django_tasks_db",
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
    "rooms.middleware.AvailabilityMiddleware",
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
                # `notifications_unread` for the bell (queried only if a page shows it).
                "rooms.notifications.unread_count",
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

# Connections: with PostgreSQL each process keeps a bounded pool of open connections
# (psycopg 3's pool, DJANGO_DB_POOL=1, the default) instead of opening one per request.
# Django's own persistent connections (DJANGO_CONN_MAX_AGE) keep one connection per thread,
# which under ASGI (sync_to_async threads) is not bounded; they are there for comparison
# and for deployments that put PgBouncer in front. Broken connections are replaced: the
# pool checks each connection before lending it (Django passes CONN_HEALTH_CHECKS on as the
# pool's check), and persistent connections are checked before reuse.
DATABASES = {
    "default": dj_database_url.config(
        env="DATABASE_URL",
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("DJANGO_CONN_MAX_AGE", 0)),
        conn_health_checks=True,
    )
}
DB_POOL = DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool(
    "DJANGO_DB_POOL", True
)
if DB_POOL:
    if DATABASES["default"]["CONN_MAX_AGE"]:
        raise ImproperlyConfigured("DJANGO_CONN_MAX_AGE must be 0 with DJANGO_DB_POOL=1.")
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": int(os.environ.get("DJANGO_DB_POOL_MIN", 1)),
        # Bounded: a request that finds every connection lent waits up to `timeout` seconds,
        # then fails with PoolTimeout (a 500), instead of opening connection after connection.
        "max_size": int(os.environ.get("DJANGO_DB_POOL_MAX", 10)),
        "timeout": float(os.environ.get("DJANGO_DB_POOL_TIMEOUT", 10)),
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
# Trust X-Forwarded-Proto only when told that every request comes through a proxy that sets
# it (and overwrites whatever the client sent): otherwise any client could claim HTTPS.
if env_bool("DJANGO_TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Load balancers probe over plain HTTP: health checks answer there instead of redirecting.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", 31_536_000))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_HTTPONLY = True

# /metrics answers staff users and these client addresses (IPs or CIDR networks, e.g.
# "10.0.0.0/8,127.0.0.1"); nobody else. Empty by default. The address is the socket peer
# (REMOTE_ADDR): behind a proxy, list the proxy's address only if it restricts /metrics itself.
ROOMCAST_METRICS_ALLOW = env_list("ROOMCAST_METRICS_ALLOW", [])
for _network in ROOMCAST_METRICS_ALLOW:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError as _error:
        raise ImproperlyConfigured(f"ROOMCAST_METRICS_ALLOW: {_error}") from None
# /readyz: the dotted path of a function returning how many job workers are alive (each
# worker's heartbeat row, seen within 3 lease periods); "" reports the workers as "unknown".
ROOMCAST_WORKER_CHECK = "rooms.workers.live_worker_count"

# Password hashers: DJANGO_PASSWORD_HASHERS, comma-separated hasher classes, the first one
# hashing new passwords (Django's default list, PBKDF2 first, without it). `make test` names a
# fast one: the tests hash a password for each user they create, and PBKDF2 made that most of
# the suite's time. Never in production: a fast hash is a weak one.
if os.environ.get("DJANGO_PASSWORD_HASHERS"):
    PASSWORD_HASHERS = env_list("DJANGO_PASSWORD_HASHERS", [])

# Logs go to stderr: one JSON object per line with ROOMCAST_LOG_JSON=1 (for a log shipper;
# `extra=` values such as a socket's room, user, duration and close code become fields),
# plain text otherwise. rooms/logging.py applies LOGGING below in that format.
ROOMCAST_LOG_JSON = env_bool("ROOMCAST_LOG_JSON", False)
LOGGING_CONFIG = "rooms.logging.configure"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "rooms": {"handlers": ["console"], "level": os.environ.get("ROOMCAST_LOG_LEVEL", "INFO")},
    },
}

# --- access: password reset ---
# Password reset is offered (and its pages answer) only when mail can be sent.
ROOMCAST_EMAIL_ENABLED = bool(os.environ.get("EMAIL_HOST"))
# --- end access ---

# --- jobs: background jobs, exports, notifications, email ---
# Jobs are stored in the database and run by `manage.py roomcast_worker` processes
# (`make run` starts one beside the server).
TASKS = {
    "default": {
        "BACKEND": "django_tasks_db.DatabaseBackend",
        "QUEUES": ["default"],
    }
}
# A running job's lease: its worker renews it every LEASE/3 seconds; a job whose lease ran
# out (its worker died) is re-queued by any worker's reaper. Failed jobs are retried with a
# growing delay until MAX_ATTEMPTS runs in all, then left failed.
ROOMCAST_JOB_LEASE = float(os.environ.get("ROOMCAST_JOB_LEASE", 30))
ROOMCAST_JOB_MAX_ATTEMPTS = int(os.environ.get("ROOMCAST_JOB_MAX_ATTEMPTS", 3))
ROOMCAST_JOB_RETRY_DELAY = float(os.environ.get("ROOMCAST_JOB_RETRY_DELAY", 10))
# Worker -> page pushes without a shared channel layer go through the database: each web
# process reads them every INTERVAL seconds (at most BATCH a time); rows live TTL seconds.
ROOMCAST_RELAY_INTERVAL = float(os.environ.get("ROOMCAST_RELAY_INTERVAL", 0.25))
ROOMCAST_RELAY_BATCH = int(os.environ.get("ROOMCAST_RELAY_BATCH", 200))
ROOMCAST_RELAY_TTL = float(os.environ.get("ROOMCAST_RELAY_TTL", 60))
# Room exports: where the files go, how long a finished one may be downloaded (seconds),
# and how often its progress bar moves at least (seconds).
ROOMCAST_EXPORT_DIR = Path(os.environ.get("ROOMCAST_EXPORT_DIR") or BASE_DIR / "exports")
ROOMCAST_EXPORT_TTL = float(os.environ.get("ROOMCAST_EXPORT_TTL", 24 * 3600))
ROOMCAST_EXPORT_PROGRESS_INTERVAL = float(os.environ.get("ROOMCAST_EXPORT_PROGRESS_INTERVAL", 0.5))
# Missed-mention emails: the first mention of a user with no page open schedules a digest
# DELAY seconds later; every mention until then joins it.
ROOMCAST_DIGEST_DELAY = float(os.environ.get("ROOMCAST_DIGEST_DELAY", 600))
# The address of the site in emails (links back to rooms).
ROOMCAST_SITE_URL = os.environ.get("ROOMCAST_SITE_URL", "http://127.0.0.1:8000")
# Email (digests, password resets): SMTP when EMAIL_HOST is set, else printed to the console
# (or written to files in EMAIL_FILE_PATH).
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = int(os.environ.get("EMAIL_PORT", 587))
    EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
elif os.environ.get("EMAIL_FILE_PATH"):
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = os.environ["EMAIL_FILE_PATH"]
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Roomcast <roomcast@localhost>")

# --- core: the live core's limits and intervals ---
# Entries a socket's outbox holds before it overflows (dropped; the page catches up from
# the database), and overflows in a row (no frame written between) before it is closed.
ROOMCAST_OUTBOX_LIMIT = int(os.environ.get("ROOMCAST_OUTBOX_LIMIT", 1000))
ROOMCAST_OUTBOX_MAX_OVERFLOWS = int(os.environ.get("ROOMCAST_OUTBOX_MAX_OVERFLOWS", 3))
# Under load, how long at most the next batch of frames waits for more events to join it
# (seconds; it waits half of what the last batch cost, so never under light load; 0: never).
ROOMCAST_BATCH_MAX_DELAY = float(os.environ.get("ROOMCAST_BATCH_MAX_DELAY", 0.02))
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
ROOMCAST_SOCKET_BUFFER_LIMIT = int(os.environ.get("ROOMCAST_SOCKET_BUFFER_LIMIT", 256 * 1024))
