"""`manage.py remove_member <room-slug> <username>`: as the owner's Remove button does."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from rooms import actions
from rooms.models import Room


class Command(BaseCommand):
    help = "Remove a member from a private room; their open pages of it close at once."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the room's slug, as in /rooms/<slug>/")
        parser.add_argument("username", help="the member to remove")

    def handle(self, slug: str, username: str, **options) -> None:
        room = Room.objects.filter(slug=slug).first()
        if room is None:
            raise CommandError(f"There is no room {slug!r}.")
        member = get_user_model().objects.filter(username=username).first()
        if member is None:
            raise CommandError(f"There is no user called {username!r}.")
        try:
            actions.remove_member(room, actions.SYSTEM, member)
        except actions.ActionError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"Removed {username} from {room.title}.")
