"""The gdbstub client's framing and the memory that reads tables through it."""

from __future__ import annotations

import socket
import threading

from s2mmu.real.gdb import GdbStub, StubMemory, checksum, unescape


def test_checksum_and_binary_escapes() -> None:
    assert checksum(b"OK") == b"9a"
    assert unescape(b"a}\x5db") == b"a}b"


def fake_stub(replies: dict[bytes, bytes]) -> tuple[GdbStub, list[bytes]]:
    """Return a client talking to a thread that answers packets from a table."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        buf = b""
        while True:
            data = conn.recv(4096)
            if not data:
                return
            buf += data
            while b"#" in buf and buf.index(b"#") + 3 <= len(buf):
                start = buf.index(b"$")
                end = buf.index(b"#")
                packet = buf[start + 1:end]
                buf = buf[end + 3:]
                seen.append(packet)
                reply = replies.get(packet.split(b",")[0], b"E01")
                conn.sendall(b"+$" + reply + b"#" + checksum(reply))

    threading.Thread(target=serve, daemon=True).start()
    return GdbStub(server.getsockname()[1]), seen


def test_registers_by_name_from_the_target_description() -> None:
    target = (b'l<target><xi:include href="core.xml"/><xi:include href="sys.xml"/>'
              b'</target>')
    stub, _ = fake_stub({
        b"qSupported:xmlRegisters=aarch64": b"PacketSize=1000",
        b"qXfer:features:read:target.xml:0": target,
        b"qXfer:features:read:core.xml:0": b'l<reg name="x0"/><reg name="x1"/>',
        b"qXfer:features:read:sys.xml:0": b'l<reg name="VTTBR_EL2" regnum="40"/>'
                                          b'<reg name="VTCR_EL2"/>',
        b"p29": b"0100000000000100",
        b"p28": b"0110000000000000",
    })
    assert stub.register("VTCR_EL2") == 0x0001000000000001
    assert stub.regnums == {"X0": 0, "X1": 1, "VTTBR_EL2": 40, "VTCR_EL2": 41}
    assert stub.register("VTTBR_EL2") == 0x1001
    stub.close()


def test_stub_memory_fetches_each_page_once() -> None:
    page = bytes(range(256)) * 16
    stub, seen = fake_stub({f"m{0x1000 + i:x}".encode(): page[i:i + 0x400].hex().encode()
                            for i in range(0, 0x1000, 0x400)})
    mem = StubMemory(stub)
    assert mem.read_bytes(0x1008, 8) == page[8:16]
    assert mem.read_bytes(0x1ff8, 8) == page[-8:]
    assert len(seen) == 4 and mem.fetched == {0x1000}
    stub.close()
