"""Client ports in one process: connection caps and the blocking native client's TLS socket
shared by a reader thread and writer threads (the HTTP header deadline: test_http_front.py)."""
from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

from consensus_store.client.native import _TlsSocket
from consensus_store.config import Address, Limits
from consensus_store.launcher import free_ports
from consensus_store.node.client_ports import (LAST_FDS, MIN_CAP, RESERVED_FDS, ClientPort,
                                               ConnectionGate, connection_caps)
from consensus_store.testing.certs import CertificateAuthority
from consensus_store.tls import client_context, server_context
from consensus_store.testing.polling import closed_within


def test_caps_shrink_to_fit_the_open_files_limit() -> None:
    limits = Limits(max_http_connections=1000, max_native_connections=1000)
    roomy = connection_caps(limits, 20_000)
    assert (roomy.http, roomy.native, roomy.fd_ceiling) == (1000, 1000, 20_000 - LAST_FDS)
    tight = connection_caps(limits, 1024)
    assert tight.http + tight.native <= 1024 - RESERVED_FDS and tight.http == tight.native
    assert connection_caps(limits, 1024, native=False).native == 0
    assert connection_caps(limits, 100).http == MIN_CAP


async def _serve(port: ClientPort) -> Address:
    address = Address("127.0.0.1", free_ports(1)[0])
    await port.listen(address)
    return address


def test_gate_closes_connections_over_the_cap_and_counts_them_back() -> None:
    class Idle(asyncio.Protocol):
        pass

    async def scenario() -> None:
        gate = ConnectionGate("native", 3, 10_000)
        port = ClientPort("native", Idle, gate, None)
        address = await _serve(port)
        try:
            streams = [await asyncio.open_connection(address.host, address.port)
                       for _ in range(5)]
            closed = [await closed_within(reader, 0.5) for reader, _ in streams]
            assert closed.count(True) == 2 and gate.open == 3
            for _, writer in streams:
                writer.close()
            for _ in range(100):
                if gate.open == 0:
                    break
                await asyncio.sleep(0.01)
            assert gate.open == 0
        finally:
            await port.close()
    asyncio.run(scenario())


def test_tls_socket_serves_a_reader_thread_and_writer_threads_at_once(tmp_path: Path) -> None:
    """Echo over TLS: 8 writer threads send while the reader thread receives (an SSLSocket
    shared like this can corrupt its state or crash; _TlsSocket never lets two threads into
    OpenSSL at once)."""
    ca = CertificateAuthority.create()
    ca_file, files = ca.write_ca(tmp_path), ca.write(tmp_path, "node")
    ready = threading.Event()
    address: list[Address] = []
    stop: list[asyncio.AbstractEventLoop] = []

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)   # type: ignore[attr-defined]

    def serve() -> None:
        async def main() -> None:
            port = ClientPort("native", Echo, ConnectionGate("native", 10, 10_000),
                              server_context(files.cert, files.key))
            address.append(await _serve(port))
            stop.append(asyncio.get_running_loop())
            ready.set()
            await asyncio.Event().wait()
        try:
            asyncio.run(main())
        except RuntimeError:     # the loop stopped from the test
            pass

    threading.Thread(target=serve, daemon=True).start()
    assert ready.wait(10)
    sock = socket.create_connection((address[0].host, address[0].port), timeout=5)
    tls = _TlsSocket(sock, client_context(ca_file), address[0].host)
    tls.handshake()
    chunk, per_writer, writers = b"0123456789abcdef" * 256, 100, 8
    expected = len(chunk) * per_writer * writers
    received = bytearray()

    def read() -> None:
        while len(received) < expected:
            data = tls.recv(65536)
            if not data:
                return
            received.extend(data)

    reader = threading.Thread(target=read)
    reader.start()
    senders = [threading.Thread(target=lambda: [tls.sendall(chunk) for _ in range(per_writer)])
               for _ in range(writers)]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(30)
    reader.join(30)
    tls.close()
    stop[0].call_soon_threadsafe(stop[0].stop)
    assert len(received) == expected
    assert bytes(received) == chunk * (per_writer * writers)   # whole chunks, in some order
