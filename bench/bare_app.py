"""The ceiling: a bare ASGI app (no Channels) that sends every text it receives to every
open socket. What is left is the server's own cost of writing a frame."""

sockets = set()


async def application(scope, receive, send):
    if scope["type"] != "websocket":
        return
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
            sockets.add(send)
        elif message["type"] == "websocket.receive":
            frame = {"type": "websocket.send", "text": message["text"]}
            for peer in list(sockets):
                await peer(frame)
        elif message["type"] == "websocket.disconnect":
            sockets.discard(send)
            return
