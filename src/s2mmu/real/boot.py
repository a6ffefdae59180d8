"""Boot Debian's arm64 kernel under QEMU TCG with KVM at EL2 and run plans in it.

- The kernel: Debian's current arm64 image (the package linux-image-arm64:arm64 depends on,
  fetched with ``apt-get download`` into the cache), another kernel image package (.deb),
  or a raw arm64 Image.
- The VMM: src/s2mmu/real/csrc/vmm.c, cross-compiled static with Debian's
  aarch64-linux-gnu-gcc (cached by the source's hash).
- The initramfs: a newc cpio written here holding the VMM as /init and the plans.
- QEMU: ``-M virt,virtualization=on,gic-version=3 -cpu max,pauth=off`` (pointer
  authentication emulation makes a boot 5x slower) with ``kvm-arm.mode=`` choosing VHE,
  nVHE or protected (pKVM) mode.
"""

from __future__ import annotations

import enum
import fcntl
import hashlib
import os
import re
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from s2mmu.arch.errors import InputError
from s2mmu.real.gdb import GdbStub

METAPACKAGE = "linux-image-arm64:arm64"
CROSS_CC = "aarch64-linux-gnu-gcc"
QEMU = "qemu-system-aarch64"
BOOT_TIMEOUT = 300.0


class Mode(enum.Enum):
    """How KVM runs at EL2 (the kernel's kvm-arm.mode= values)."""

    VHE = "vhe"
    NVHE = "nvhe"
    PROTECTED = "protected"

    @property
    def cmdline(self) -> str:
        """Return the kernel command-line option that selects the mode."""
        return "" if self is Mode.VHE else f"kvm-arm.mode={self.value}"


class ToolMissing(InputError):
    """A host tool or package the real run needs is not installed (the message says which)."""


def cache_dir(cache: str | Path | None = None) -> Path:
    """Return the cache folder ($XDG_CACHE_HOME/s2mmu/real unless given)."""
    if cache is not None:
        path = Path(cache)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "s2mmu" / "real"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """Hold the cache's lock (test workers and parallel runs download and build once)."""
    with (cache / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# -- the kernel -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Kernel:
    """A bootable arm64 Image and where it came from."""

    image: Path
    source: str
    """The package name (or the path given)."""


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ToolMissing(f"real KVM: {what} needs {cmd[0]}, which is not installed "
                          "(scripts/install-and-test.sh installs it)") from None
    if p.returncode != 0:
        err = (p.stderr.strip().splitlines() or ["exit status " + str(p.returncode)])[-1]
        raise ToolMissing(f"real KVM: {what} failed: {' '.join(cmd)}: {err}")
    return p.stdout


def current_package() -> str:
    """Return the kernel image package Debian's arm64 metapackage depends on."""
    text = _run(["apt-cache", "depends", METAPACKAGE], "resolving " + METAPACKAGE)
    m = re.search(r"Depends:\s*(linux-image-\S+)", text)
    if m is None:
        raise ToolMissing(f"real KVM: apt knows no {METAPACKAGE}: run 'dpkg "
                          "--add-architecture arm64 && apt-get update' (scripts/"
                          "install-and-test.sh does)")
    name = m.group(1)
    return name if ":" in name else name + ":arm64"


def download(package: str, cache: Path) -> Path:
    """Return the .deb of a package in the cache, fetching it with apt-get download."""
    stem = package.split(":")[0]
    found = sorted(cache.glob(f"{stem}_*_arm64.deb"))
    if found:
        return found[-1]
    _run(["apt-get", "download", package], "downloading " + package, cwd=cache)
    found = sorted(cache.glob(f"{stem}_*_arm64.deb"))
    if not found:
        raise ToolMissing(f"real KVM: apt-get download {package} left no .deb in {cache}")
    return found[-1]


def extract_image(deb: Path, cache: Path) -> Path:
    """Return the vmlinuz inside a kernel image .deb (extracted once into the cache)."""
    out = cache / (deb.stem + ".vmlinuz")
    if out.exists():
        return out
    if shutil.which("dpkg-deb") is None:
        raise ToolMissing("real KVM: reading a .deb needs dpkg-deb, which is not installed")
    image = None
    with tempfile.TemporaryFile() as errf, subprocess.Popen(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
            stderr=errf) as p:
        assert p.stdout is not None
        try:
            with tarfile.open(fileobj=p.stdout, mode="r|") as tar:
                for m in tar:
                    if image is None and m.isfile() and re.search(r"(^|/)vmlinuz-[^/]+$",
                                                                  m.name):
                        member = tar.extractfile(m)
                        assert member is not None
                        image = member.read()
                        break
        except tarfile.TarError:
            image = None
        if image is not None:
            p.kill()  # the image comes early (./boot/): the modules need not be read
        p.stdout.close()
        p.wait()
        errf.seek(0)
        err = errf.read().decode(errors="replace").strip()
    if image is None and p.returncode != 0:
        raise InputError(f"real KVM: {deb}: not a Debian package: {err}")
    if image is None:
        raise InputError(f"real KVM: {deb} holds no vmlinuz: not a kernel image package")
    out.write_bytes(image)
    return out


def resolve_kernel(spec: str | None, cache: Path) -> Kernel:
    """Return the kernel to boot: Debian's current arm64 image, a .deb, or an Image."""
    if spec is None:
        pkg = current_package()
        return Kernel(extract_image(download(pkg, cache), cache), pkg)
    path = Path(spec)
    if not path.exists():
        raise InputError(f"real KVM: --kernel {spec}: no such file")
    if path.suffix == ".deb":
        with cache_lock(cache):
            return Kernel(extract_image(path, cache), str(path))
    return Kernel(path, str(path))


# -- the VMM and the initramfs ----------------------------------------------------------------


def vmm_source() -> bytes:
    """Return the VMM's C source."""
    return resources.files("s2mmu.real").joinpath("csrc/vmm.c").read_bytes()


def build_vmm(cache: Path) -> Path:
    """Return the static arm64 VMM, cross-compiling it when its source changed."""
    src = vmm_source()
    out = cache / f"vmm-{hashlib.sha256(src).hexdigest()[:16]}"
    if out.exists():
        return out
    with cache_lock(cache):
        return out if out.exists() else compile_vmm(src, out, cache)


def compile_vmm(src: bytes, out: Path, cache: Path) -> Path:
    """Cross-compile the VMM's source into out."""
    if shutil.which(CROSS_CC) is None:
        raise ToolMissing(f"real KVM: building the VMM needs {CROSS_CC} (Debian packages "
                          "gcc-aarch64-linux-gnu libc6-dev-arm64-cross)")
    c = cache / "vmm.c"
    c.write_bytes(src)
    tmp = out.with_suffix(".tmp")
    _run([CROSS_CC, "-O2", "-static", "-Wall", "-o", str(tmp), str(c)], "building the VMM")
    tmp.rename(out)
    return out


def _newc(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
          ino: int = 1) -> bytes:
    """Return one newc cpio entry."""
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
    head = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
    entry = head + name.encode() + b"\0"
    entry += b"\0" * (-len(entry) % 4) + data
    return entry + b"\0" * (-len(entry) % 4)


def initramfs(vmm: bytes, plans: list[tuple[str, str]]) -> bytes:
    """Return a newc cpio: /init (the VMM), /plans/NAME, mount points and /dev/console."""
    entries = [("dev", 0o40755, b""), ("proc", 0o40755, b""), ("sys", 0o40755, b""),
               ("plans", 0o40755, b""), ("init", 0o100755, vmm)]
    entries += [(f"plans/{name}", 0o100644, text.encode()) for name, text in plans]
    out = b"".join(_newc(n, m, d, ino=i) for i, (n, m, d) in enumerate(entries, 1))
    out += _newc("dev/console", 0o20600, rdev=(5, 1), ino=len(entries) + 1)
    out += _newc("TRAILER!!!", 0, ino=0)
    return out + b"\0" * (-len(out) % 512)


# -- booting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Boot:
    """One boot's console output and how long it took."""

    console: str
    seconds: float
    mode: Mode
    kernel: Kernel


def qemu_command(kernel: Path, initrd: Path, mode: Mode, gdb_port: int | None = None) -> list[str]:
    """Return QEMU's command line (with a gdbstub on the loopback port, if given)."""
    append = f"console=ttyAMA0 panic=-1 quiet {mode.cmdline}".strip()
    return [QEMU, "-M", "virt,virtualization=on,gic-version=3", "-cpu", "max,pauth=off",
            "-m", "1G", "-smp", "1", "-nographic", "-no-reboot", "-nodefaults",
            "-serial", "stdio", "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", append] + (
                ["-gdb", f"tcp:127.0.0.1:{gdb_port}"] if gdb_port is not None else [])


DumpHook = Callable[[str, int, GdbStub], None]
"""Called with the plan's file name, the step, and the gdbstub while the guest spins."""
DUMP_READY = re.compile(r"^S2R dump (\d+) ready")


def free_port() -> int:
    """Return a free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_live(cmd: list[str], port: int, on_dump: DumpHook) -> str:
    """Run QEMU reading its console line by line; at each "dump N ready" call on_dump
    through the gdbstub, then type "go" on the console so the VMM goes on."""
    lines: list[str] = []
    plan = ""
    stub: GdbStub | None = None
    deadline = time.monotonic() + BOOT_TIMEOUT
    with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL) as p:
        assert p.stdin is not None and p.stdout is not None
        try:
            for raw in p.stdout:
                line = raw.decode(errors="replace").rstrip("\r\n")
                lines.append(line)
                if line.startswith("S2R plan "):
                    plan = line.split()[2]
                elif m := DUMP_READY.match(line):
                    stub = stub or GdbStub(port)
                    on_dump(plan, int(m.group(1)), stub)
                    p.stdin.write(b"go\n")
                    p.stdin.flush()
                if time.monotonic() > deadline:
                    raise ToolMissing(f"real KVM: the boot took more than {BOOT_TIMEOUT:.0f} s")
        finally:
            if stub is not None:
                stub.close()
            if p.poll() is None:
                p.kill()
    return "\n".join(lines) + "\n"


def boot(kernel: Kernel, plans: list[tuple[str, str]], mode: Mode,
         cache: Path, on_dump: DumpHook | None = None) -> Boot:
    """Boot the kernel with the VMM as /init running the plans; return the console.

    on_dump: called at each stage-2 dump a plan asks for (QEMU then runs a gdbstub on a
    loopback port and the console is read as it comes).
    """
    if shutil.which(QEMU) is None:
        raise ToolMissing(f"real KVM: booting needs {QEMU} (Debian package qemu-system-arm)")
    vmm = build_vmm(cache).read_bytes()
    digest = hashlib.sha256(repr(plans).encode()).hexdigest()[:12]
    initrd = cache / f"initrd-{os.getpid()}-{digest}.cpio"
    initrd.write_bytes(initramfs(vmm, plans))
    t0 = time.monotonic()
    if on_dump is not None:
        port = free_port()
        try:
            text = run_live(qemu_command(kernel.image, initrd, mode, port), port, on_dump)
        finally:
            initrd.unlink(missing_ok=True)
        return Boot(text, time.monotonic() - t0, mode, kernel)
    try:
        p = subprocess.run(qemu_command(kernel.image, initrd, mode), capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=BOOT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise ToolMissing(f"real KVM: the boot took more than {BOOT_TIMEOUT:.0f} s") from None
    finally:
        initrd.unlink(missing_ok=True)
    text = p.stdout.decode(errors="replace").replace("\r\n", "\n")
    return Boot(text, time.monotonic() - t0, mode, kernel)
