"""Read the real stage 2 through QEMU's gdbstub: registers by name, physical memory.

A small GDB remote-serial-protocol client (packets ``$data#checksum`` with acks; Ctrl-C
to halt; ``c`` to continue): the register numbers come from the target description QEMU
serves (``qXfer:features:read``, its system-register XML included), ``p`` reads one,
``Qqemu.PhyMemMode:1`` switches ``m`` reads to physical addresses. The stage 2 is then
dumped by s2mmu.arch.dump over a memory that fetches each 4K page from QEMU on first use.
"""

from __future__ import annotations

import random
import re
import socket
import time
from dataclasses import dataclass

from s2mmu.arch.dump import TableDump, dump_s2
from s2mmu.arch.errors import InputError
from s2mmu.arch.features import PRESETS
from s2mmu.arch.memory import PhysMem
from s2mmu.arch.params import get_s2_ttw_params
from s2mmu.arch.state import SysRegs
from s2mmu.arch.translate import Env

CHUNK = 0x400
"""Bytes per memory read packet (QEMU's packet buffer takes 4K of hex)."""


class GdbError(InputError):
    """The gdbstub did not answer as the protocol says."""


def checksum(data: bytes) -> bytes:
    """Return a packet's two-hex-digit checksum."""
    return f"{sum(data) & 0xFF:02x}".encode()


def unescape(data: bytes) -> bytes:
    """Undo the binary escapes of a qXfer reply ('}' then the byte xor 0x20)."""
    out = bytearray()
    it = iter(data)
    for b in it:
        out.append(next(it) ^ 0x20 if b == 0x7D else b)
    return bytes(out)


class GdbStub:
    """A connection to QEMU's gdbstub."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise GdbError(f"real KVM: QEMU's gdbstub on port {port} did not "
                                   "answer") from None
                time.sleep(0.1)
        self.buf = b""
        self.regnums: dict[str, int] = {}

    def _recv(self) -> bytes:
        while True:
            m = re.search(rb"\$([^#]*)#[0-9a-fA-F]{2}", self.buf)
            if m:
                self.buf = self.buf[m.end():]
                self.sock.sendall(b"+")
                return m.group(1)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise GdbError("real KVM: QEMU closed the gdbstub connection")
            self.buf += chunk

    def command(self, data: str | bytes) -> bytes:
        """Send one packet and return the reply's payload."""
        raw = data.encode() if isinstance(data, str) else data
        self.sock.sendall(b"$" + raw + b"#" + checksum(raw))
        return self._recv()

    def halt(self) -> bytes:
        """Stop the machine (Ctrl-C) and return the stop reply."""
        self.sock.sendall(b"\x03")
        return self._recv()

    def resume(self) -> None:
        """Let the machine run on (no reply until it stops again)."""
        raw = b"c"
        self.sock.sendall(b"$" + raw + b"#" + checksum(raw))

    def xfer(self, annex: str) -> str:
        """Return a whole target-description file."""
        out = b""
        while True:
            reply = self.command(f"qXfer:features:read:{annex}:{len(out):x},{0xF00:x}")
            if not reply or reply[:1] not in (b"m", b"l"):
                raise GdbError(f"real KVM: gdbstub has no {annex}: {reply[:40]!r}")
            out += unescape(reply[1:])
            if reply[:1] == b"l":
                return out.decode()

    def load_registers(self) -> None:
        """Number every register the target description names (in order, or regnum=)."""
        self.command("qSupported:xmlRegisters=aarch64")
        target = self.xfer("target.xml")
        n = 0
        for inc in [None, *re.findall(r'<xi:include href="([^"]+)"', target)]:
            text = target if inc is None else self.xfer(inc)
            for m in re.finditer(r"<reg ([^>]*)/?>", text):
                attrs = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
                n = int(attrs["regnum"]) if "regnum" in attrs else n
                self.regnums[attrs["name"].upper()] = n
                n += 1

    def register(self, name: str) -> int:
        """Return a register's value, by its architectural name."""
        if not self.regnums:
            self.load_registers()
        if name not in self.regnums:
            raise GdbError(f"real KVM: QEMU's gdbstub names no register {name}")
        reply = self.command(f"p{self.regnums[name]:x}")
        if not re.fullmatch(rb"[0-9a-fA-F]+", reply):
            raise GdbError(f"real KVM: reading {name}: {reply[:40]!r}")
        return int.from_bytes(bytes.fromhex(reply.decode()), "little")

    def physical(self) -> None:
        """Make memory reads physical (QEMU's Qqemu.PhyMemMode)."""
        reply = self.command("Qqemu.PhyMemMode:1")
        if reply != b"OK":
            raise GdbError(f"real KVM: QEMU refused physical memory mode: {reply[:40]!r}")

    def read(self, pa: int, size: int) -> bytes:
        """Return size bytes of physical memory at pa."""
        out = b""
        while len(out) < size:
            n = min(CHUNK, size - len(out))
            reply = self.command(f"m{pa + len(out):x},{n:x}")
            if reply.startswith(b"E") or len(reply) != 2 * n:
                raise GdbError(f"real KVM: reading PA {pa + len(out):#x}: {reply[:40]!r}")
            out += bytes.fromhex(reply.decode())
        return out

    def close(self) -> None:
        """Drop the connection."""
        self.sock.close()


class StubMemory(PhysMem):
    """Physical memory that fetches each 4K page from the gdbstub the first time it is read."""

    def __init__(self, stub: GdbStub) -> None:
        super().__init__()
        self.stub = stub
        self.fetched: set[int] = set()

    def read_bytes(self, pa: int, size: int) -> bytes:
        for page in range(pa & ~0xFFF, pa + size, 0x1000):
            if page not in self.fetched:
                self.fetched.add(page)
                super().write_bytes(page, self.stub.read(page, 0x1000))
        return super().read_bytes(pa, size)


@dataclass(frozen=True)
class RealStage2:
    """The stage 2 read from the machine: its registers and its dump."""

    vttbr: int
    vtcr: int
    hcr: int
    dump: TableDump
    pages_read: int


def guest_vttbr(vttbr: int) -> bool:
    """Return whether VTTBR_EL2 holds a guest's stage 2 (VMID not 0): while the guest
    runs, and under VHE also while the host runs (the host leaves it loaded); nVHE's host
    runs with VTTBR_EL2 0 and pKVM's under its own stage 2, VMID 0."""
    return vttbr >> 48 != 0


def read_stage2(stub: GdbStub, known: RealStage2 | None = None,
                attempts: int = 400) -> RealStage2:
    """Halt the machine when VTTBR_EL2 holds the guest's stage 2 and dump it, then resume.

    Halts come at random intervals (the VMM interrupts the spinning guest every 20 ms)
    until one finds the guest's VTTBR_EL2. known: an earlier read of the same VM; its
    registers serve when the guest is not caught (the VM's stage-2 root and VTCR_EL2 do
    not change in its life, and its tables are read from physical memory either way).
    """
    last = 0
    for i in range(attempts):
        stub.halt()
        last = stub.register("VTTBR_EL2")
        if guest_vttbr(last) or (known is not None and i >= 20):
            break
        stub.resume()
        time.sleep(random.uniform(0.001, 0.013))
    else:
        raise GdbError(f"real KVM: VTTBR_EL2 never held the guest's stage 2 in {attempts} "
                       f"halts (last {last:#x}): the guest was not caught running")
    try:
        if guest_vttbr(last) or known is None:
            vttbr, vtcr, hcr = (stub.register(n) for n in ("VTTBR_EL2", "VTCR_EL2",
                                                           "HCR_EL2"))
        else:
            vttbr, vtcr, hcr = known.vttbr, known.vtcr, known.hcr
        stub.physical()
        mem = StubMemory(stub)
        env = Env(mem, PRESETS["qemu-max"]())
        regs = SysRegs(VTTBR_EL2=vttbr, VTCR_EL2=vtcr, HCR_EL2=hcr)
        dump = dump_s2(get_s2_ttw_params(regs, env.fs, env.choices), env)
        return RealStage2(vttbr, vtcr, hcr, dump, len(mem.fetched))
    finally:
        stub.resume()


def host_vttbr(vttbr: int, hcr: int) -> bool:
    """Return whether the registers are pKVM's host running under its own stage 2:
    HCR_EL2.VM set, VMID 0, a table base (the host_mmu.pgt root, __load_host_stage2)."""
    return hcr & 1 == 1 and vttbr >> 48 == 0 and vttbr & 0x0000_FFFF_FFFF_FFFE != 0


def read_host_stage2(stub: GdbStub, attempts: int = 400) -> RealStage2:
    """Halt the machine when pKVM's host runs and dump its stage 2 (VMID 0), with the
    invalid entries that carry ownership annotations, then resume."""
    last = (0, 0)
    for _ in range(attempts):
        stub.halt()
        last = (stub.register("VTTBR_EL2"), stub.register("HCR_EL2"))
        if host_vttbr(*last):
            break
        stub.resume()
        time.sleep(random.uniform(0.001, 0.013))
    else:
        raise GdbError(f"real KVM: no halt in {attempts} found pKVM's host stage 2 loaded "
                       f"(last VTTBR_EL2 {last[0]:#x}, HCR_EL2 {last[1]:#x}): is the mode "
                       "protected?")
    try:
        vttbr, hcr = last
        vtcr = stub.register("VTCR_EL2")
        stub.physical()
        mem = StubMemory(stub)
        env = Env(mem, PRESETS["qemu-max"]())
        regs = SysRegs(VTTBR_EL2=vttbr, VTCR_EL2=vtcr, HCR_EL2=hcr)
        dump = dump_s2(get_s2_ttw_params(regs, env.fs, env.choices), env, unused=True)
        return RealStage2(vttbr, vtcr, hcr, dump, len(mem.fetched))
    finally:
        stub.resume()
