"""Demo data for `make run`: two users and a few rooms with history, on an empty database."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from rooms import actions
from rooms.models import Room

DEMO_USERS = {"alice": "roomcast-alice", "bob": "roomcast-bob"}
DEMO_ROOMS = {
    "Lobby": [
        ("alice", "Welcome to Roomcast! Open this room in two windows and say hello."),
        ("bob", "Hi alice. Messages arrive live, no reload needed."),
        ("alice", "Try signing in as bob in a private window."),
    ],
    "Random": [("bob", "Anything goes in here.")],
    "Release planning": [("alice", "What ships this week?")],
}


class Command(BaseCommand):
    help = "Add demo users and rooms with some history, if the database has no rooms yet."

    def handle(self, *args, **options) -> None:
        if Room.objects.exists():
            self.stdout.write("Rooms exist already: no demo data added.")
            return
        User = get_user_model()
        users = {}
        for username, password in DEMO_USERS.items():
            users[username], _ = User.objects.get_or_create(username=username)
            users[username].set_password(password)
            users[username].save()
        for title, history in DEMO_ROOMS.items():
            room = actions.create_room(users["alice"], title)
            for username, body in history:
                actions.post_message(room, users[username], body)
        logins = ", ".join(f"{u} / {p}" for u, p in DEMO_USERS.items())
        self.stdout.write(self.style.SUCCESS(f"Demo data added. Log in as {logins}."))
