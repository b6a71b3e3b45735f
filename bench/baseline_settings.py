"""Settings for the tutorial-style baseline: the bare minimum Channels needs."""

SECRET_KEY = "bench-baseline"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "daphne",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "channels",
]
# Sessions and auth as the tutorial has them (its sockets are anonymous here: no queries).
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
ASGI_APPLICATION = "bench.baseline_app.application"
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
USE_TZ = True
