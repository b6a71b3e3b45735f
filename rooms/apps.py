from django.apps import AppConfig


class RoomsConfig(AppConfig):
    name = "rooms"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the live-fragment check; connects the revocation signals; sets how long
        # a batch of frames may wait under load.
        from django.conf import settings

        from rooms import checks, outbox, revocation  # noqa: F401

        outbox.ready_set.max_delay = settings.ROOMCAST_BATCH_MAX_DELAY
