"""The tutorial-style baseline: a chat consumer written the way Channels' tutorial teaches.

Each consumer joins the room's group itself, `group_send`s what it receives, and sends
the JSON payload in its own group handler: one layer message, one dispatch and one
`json.dumps` per socket per event, on the in-memory layer.
"""

import json
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.baseline_settings")

import django  # noqa: E402

django.setup()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.room_group_name = f"chat_{self.scope['url_route']['kwargs']['room_name']}"
        await self.channel_layer.group_add(self.room_group_name, self.channel_name)
        await self.accept()

    async def disconnect(self, close_code):
        await self.channel_layer.group_discard(self.room_group_name, self.channel_name)

    async def receive(self, text_data):
        message = json.loads(text_data)["message"]
        await self.channel_layer.group_send(
            self.room_group_name, {"type": "chat.message", "message": message}
        )

    async def chat_message(self, event):
        await self.send(text_data=json.dumps({"message": event["message"]}))


# The tutorial's asgi.py: origin check, session auth, routes.
application = ProtocolTypeRouter(
    {
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(
                URLRouter([path("ws/chat/<str:room_name>/", ChatConsumer.as_asgi())])
            )
        )
    }
)
