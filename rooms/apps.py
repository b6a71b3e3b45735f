from django.apps import AppConfig


class RoomsConfig(AppConfig):
    name = "rooms"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the live-fragment check; connects the revocation signals.
        from rooms import checks, revocation  # noqa: F401
