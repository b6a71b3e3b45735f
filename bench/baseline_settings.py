"""Settings for the tutorial-style baseline: the bare minimum Channels needs."""

SECRET_KEY = "bench-baseline"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["daphne", "channels"]
DATABASES = {}
ASGI_APPLICATION = "bench.baseline_app.application"
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
USE_TZ = True
