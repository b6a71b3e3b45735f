"""`manage.py announce <room-slug> "text"`: post a system message to a room, live for everyone."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from rooms import actions
from rooms.models import Room


class Command(BaseCommand):
    help = "Post a system message to a room; every open page of the room shows it."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the room's slug, as in /rooms/<slug>/")
        parser.add_argument("text", help="the message")

    def handle(self, slug: str, text: str, **options) -> None:
        room = Room.objects.filter(slug=slug).first()
        if room is None:
            raise CommandError(f"There is no room {slug!r}.")
        text = text.strip()
        if not text:
            raise CommandError("Write a message to announce.")
        limit = settings.ROOMCAST_MESSAGE_MAX_LENGTH
        if len(text) > limit:
            raise CommandError(f"Messages can be at most {limit} characters.")
        message = actions.post_announcement(room, text)
        self.stdout.write(f"Announced in {room.title} as message #{message.seq}.")
