"""WebSocket routes, and the socket stack every route sits behind."""

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path, re_path

from rooms.consumers import DashboardConsumer, NotFoundConsumer, RoomConsumer, UserConsumer
from rooms.fanout import Hub


def websocket_application(hub: Hub | None = None):
    """The socket side of the site: origin check, then session auth, then the routes.

    Tests pass their own hub to run two application instances in one process.
    """
    routes = [
        path("ws/rooms/<slug:slug>/", RoomConsumer.as_asgi(hub=hub), name="room_socket"),
        path("ws/me/", UserConsumer.as_asgi(hub=hub), name="user_socket"),
        path("ws/dashboard/", DashboardConsumer.as_asgi(hub=hub), name="dashboard_socket"),
        # Last: any other path is accepted and closed with 4404, not a 500 traceback.
        re_path(r"", NotFoundConsumer.as_asgi(), name="unknown_socket"),
    ]
    return AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(routes)))
