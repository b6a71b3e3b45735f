"""The one Channels internal the live core uses: fails loudly if Channels changes it."""

import inspect

from channels.sessions import InstanceSessionWrapper

from rooms import channels_adapter


def test_session_wrapper_keeps_the_servers_send_as_real_send():
    async def server_send(message):
        pass

    wrapper = InstanceSessionWrapper({"cookies": {}}, server_send)
    assert getattr(wrapper, channels_adapter.WRAPPED_ATTRIBUTE) is server_send


def test_session_wrapper_acts_only_on_http_response_start():
    # If Channels starts acting on other messages (websocket.send), bypassing it is wrong.
    assert InstanceSessionWrapper.save_message_types == list(channels_adapter.ACTS_ONLY_ON)
    assert InstanceSessionWrapper.cookie_response_message_types == list(
        channels_adapter.ACTS_ONLY_ON
    )
    assert "websocket" not in inspect.getsource(InstanceSessionWrapper.send)


def test_raw_send_unwraps_the_session_wrapper():
    async def server_send(message):
        pass

    wrapper = InstanceSessionWrapper({"cookies": {}}, server_send)
    assert channels_adapter.raw_send(wrapper.send) is server_send


def test_raw_send_leaves_any_other_send_alone():
    async def plain_send(message):
        pass

    assert channels_adapter.raw_send(plain_send) is plain_send


def test_daphne_send_is_a_partial_of_handle_reply_on_the_protocol():
    from daphne.server import Server

    source = inspect.getsource(Server.create_application)
    assert "send=partial(self.handle_reply, protocol)" in source


def test_twisted_tcp_transport_has_what_the_adapter_reads():
    from twisted.internet import tcp
    from twisted.internet.abstract import FileDescriptor

    assert issubclass(tcp.Server, FileDescriptor)
    for name in ("dataBuffer", "offset", "abortConnection", "pauseProducing"):
        assert hasattr(tcp.Server, name), name
    assert "self._tempDataLen += len(data)" in inspect.getsource(FileDescriptor.write)


def test_buffered_bytes_counts_what_the_client_has_not_taken():
    from types import SimpleNamespace

    transport = SimpleNamespace(dataBuffer=b"x" * 100, offset=40, _tempDataLen=7)
    assert channels_adapter.buffered_bytes(transport) == 67


def test_send_now_runs_a_send_that_never_waits():
    sent = []

    async def send(message):
        sent.append(message)

    channels_adapter.send_now(send, {"type": "websocket.send", "text": "a"})
    assert sent == [{"type": "websocket.send", "text": "a"}]


async def test_send_now_refuses_a_send_that_waits():
    import asyncio

    import pytest

    async def send(message):
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="waited"):
        channels_adapter.send_now(send, {"type": "websocket.send", "text": "a"})


def test_daphne_reply_is_a_coroutine_that_never_awaits():
    from daphne.server import Server

    source = inspect.getsource(Server.handle_reply)
    assert inspect.iscoroutinefunction(Server.handle_reply) and "await" not in source


def test_text_frame_is_a_final_unmasked_text_frame_of_each_length_form():
    assert channels_adapter.text_frame(b"hello") == b"\x81\x05hello"
    assert channels_adapter.text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert channels_adapter.text_frame(b"x" * 70000)[:10] == b"\x81\x7f" + (70000).to_bytes(
        8, "big"
    )


def test_autobahn_has_the_states_and_fields_write_text_reads():
    from autobahn.websocket.protocol import WebSocketProtocol

    assert WebSocketProtocol.STATE_OPEN == channels_adapter.OPEN_STATE
    assert WebSocketProtocol.SEND_STATE_GROUND == channels_adapter.GROUND_STATE
    source = inspect.getsource(WebSocketProtocol._connectionMade)
    assert "self._perMessageCompress = None" in source and "self.send_queue = deque()" in source


class FakeDaphne:
    """daphne's send (a partial of handle_reply on the protocol) and its TCP transport."""

    def __init__(self, sock, temp: int = 0):
        import functools
        from collections import deque
        from types import SimpleNamespace

        self.replies: list[dict] = []
        self.written: list[bytes] = []
        self.protocol = SimpleNamespace(
            state=3, send_state=0, _perMessageCompress=None, send_queue=deque()
        )
        self.transport = SimpleNamespace(
            connected=True,
            disconnecting=False,
            _tempDataLen=temp,
            dataBuffer=b"",
            offset=0,
            socket=sock,
            write=self.written.append,
        )
        self.send = functools.partial(self.handle_reply, self.protocol)

    async def handle_reply(self, protocol, message):
        self.replies.append(message)


def test_write_text_hands_the_frame_to_the_kernel_at_once():
    import socket

    ours, peer = socket.socketpair()
    with ours, peer:
        daphne = FakeDaphne(ours)
        channels_adapter.write_text(daphne.send, daphne.transport, "héllo")
        assert peer.recv(100) == b"\x81\x06h\xc3\xa9llo"
        assert (daphne.replies, daphne.written) == ([], [])


def test_write_text_leaves_what_the_kernel_refuses_to_twisted():
    class FullSocket:
        def send(self, data):
            raise BlockingIOError

    daphne = FakeDaphne(FullSocket())
    channels_adapter.write_text(daphne.send, daphne.transport, "hi")
    assert daphne.written == [b"\x81\x02hi"]


def test_write_text_goes_through_daphne_when_twisted_holds_data():
    daphne = FakeDaphne(None, temp=10)  # earlier frames wait: this one must queue behind them
    channels_adapter.write_text(daphne.send, daphne.transport, "hi")
    assert (daphne.replies, daphne.written) == ([{"type": "websocket.send", "text": "hi"}], [])


# uvicorn: its sans-I/O protocol's send waits only for `writable`


def test_uvicorn_send_waits_only_for_writable_then_writes():
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    source = inspect.getsource(WebSocketsSansIOProtocol.send)
    assert source.count("await ") == 1
    assert "await self.writable.wait()" in source
    assert "self.transport.write(" in source
    kind = WebSocketsSansIOProtocol
    assert f"{kind.__module__}.{kind.__qualname__}" == channels_adapter.UVICORN_PROTOCOL


def test_uvicorn_clears_writable_while_its_transport_is_full():
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    assert "self.writable.clear()" in inspect.getsource(WebSocketsSansIOProtocol.pause_writing)
    assert "self.writable.set()" in inspect.getsource(WebSocketsSansIOProtocol.resume_writing)


class FakeUvicornProtocol:
    """What the adapter reads of uvicorn's protocol, and a send shaped like its own."""

    def __init__(self):
        import asyncio

        self.writable = asyncio.Event()
        self.writable.set()
        self.close_sent = self.disconnected = False
        self.sent: list[dict] = []

    async def send(self, message):
        await self.writable.wait()
        self.sent.append(message)


def test_uvicorn_protocol_of_finds_the_protocol_behind_uvicorns_send():
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    protocol = object.__new__(WebSocketsSansIOProtocol)
    assert channels_adapter.uvicorn_protocol_of(protocol.send) is protocol


def test_uvicorn_protocol_of_recognises_only_uvicorns_send():
    fake = FakeUvicornProtocol()
    assert channels_adapter.uvicorn_protocol_of(fake.send) is None  # another class

    async def plain_send(message):
        pass

    assert channels_adapter.uvicorn_protocol_of(plain_send) is None


def test_send_if_writable_sends_at_once_while_writable():
    fake = FakeUvicornProtocol()
    assert channels_adapter.send_if_writable(fake, fake.send, "<p>hi</p>")
    assert fake.sent == [{"type": "websocket.send", "text": "<p>hi</p>"}]


def test_send_if_writable_leaves_a_client_that_is_behind_to_the_writer():
    fake = FakeUvicornProtocol()
    fake.writable.clear()
    assert not channels_adapter.send_if_writable(fake, fake.send, "<p>hi</p>")
    assert fake.sent == []


def test_send_if_writable_sends_nothing_after_close():
    fake = FakeUvicornProtocol()
    fake.close_sent = True
    assert not channels_adapter.send_if_writable(fake, fake.send, "<p>hi</p>")
    assert fake.sent == []
