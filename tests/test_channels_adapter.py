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
