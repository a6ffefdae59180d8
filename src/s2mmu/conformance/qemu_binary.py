"""Find, fetch and run a chosen QEMU: the system's 7.2, Debian's 10.0 from backports, a path.

The API other parts use (the conformance harness; real-KVM boots that need FEAT_NV):

    qemu_binary("10.0") -> QemuBinary(version="10.0.2", argv_prefix=(".../qemu-system-aarch64",))
    subprocess.run([*qemu.argv_prefix, "-M", "virt", ...])

`spec` is a series ("7.2", "10.0") or the path of a qemu-system-aarch64. "7.2" is the
system binary (Debian 12's package). "10.0" is the system binary if it is a 10.0, else
Debian's qemu-system-arm from bookworm-backports, downloaded with `apt-get download` and
extracted with `dpkg-deb -x` once into the cache ($S2MMU_CACHE_DIR or ~/.cache/s2mmu,
directory qemu-10.0.2/), under a file lock so parallel test workers fetch once. Nothing is
installed: the system's 7.2 stays what `qemu-system-aarch64` runs.

Why an extracted 10.0 runs beside 7.2: QEMU loads its modules (ui-*, audio-*, block-*) from
CONFIG_QEMU_MODDIR, /usr/lib/x86_64-linux-gnu/qemu, where 7.2's live; a module of another
build aborts QEMU ("Only modules from the same build can be loaded"). QEMU resolves that
directory, and its data and firmware directories, through get_relocated_path (QEMU
util/cutils.c): when a directory named qemu-bundle sits beside the executable, every path is
taken inside it. The extraction therefore adds usr/bin/qemu-bundle/ holding links to the
system's /usr/share, /usr/lib/ipxe and /etc, and no module directory: 10.0 then loads no
module (none is needed with -nodefaults or -nographic) and finds the ROMs and keymaps. No
root, mount namespace or wrapper is needed, so `argv_prefix` is the binary alone.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from s2mmu.conformance.qemu import HarnessUnavailable, default_cache_dir

SYSTEM_BINARY = "qemu-system-aarch64"
SERIES = ("7.2", "10.0")
"""The QEMU series the project measures (conformance divergences are tagged with them)."""
BACKPORTS = {"10.0": "1:10.0.2+ds-2+deb13u1~bpo12+1"}
"""Debian package versions of qemu-system-arm fetched for a series (bookworm-backports)."""
BUNDLE_LINKS = ("usr/share", "usr/lib/ipxe", "etc")
"""What the extracted binary's qemu-bundle/ links to the system (data, firmware, config)."""
VERSION_RE = re.compile(r"QEMU emulator version (\d+)\.(\d+)\.(\d+)")
APT_HINT = ("add Debian's bookworm-backports to apt's sources (scripts/install-and-test.sh "
            "does, pinned so that nothing is upgraded from it) and run apt-get update, or "
            "pass the path of a qemu-system-aarch64")


class QemuUnavailable(HarnessUnavailable):
    """The chosen QEMU cannot be found, fetched or run (the message says why and what to do)."""


@dataclass(frozen=True)
class QemuBinary:
    """A runnable qemu-system-aarch64 and its version.

    argv_prefix: the start of a command line (the binary), to which QEMU's own arguments
    are appended. version: "major.minor.micro" as `--version` prints it. source: where it
    came from ("system", "debian <package version>" or "path").
    """

    version: str
    argv_prefix: tuple[str, ...]
    source: str

    @property
    def series(self) -> str:
        """Return "major.minor" (the key of the conformance divergences' version tags)."""
        return ".".join(self.version.split(".")[:2])

    @property
    def label(self) -> str:
        """Return how reports name it: "QEMU 10.0.2"."""
        return f"QEMU {self.version}"


def qemu_binary(spec: str = "7.2", cache_dir: Path | None = None) -> QemuBinary:
    """Return the QEMU named by spec ("7.2", "10.0" or a path), fetching 10.0 if needed.

    Raises QemuUnavailable naming the spec, what failed and what to do.
    """
    if spec in SERIES:
        system = system_binary()
        if system is not None and system.series == spec:
            return system
        if spec in BACKPORTS:
            return fetched_binary(spec, cache_dir)
        found = system.version if system else "none"
        raise QemuUnavailable(f"--qemu {spec}: the system's {SYSTEM_BINARY} is QEMU {found} "
                              f"(apt-get install qemu-system-arm gives Debian 12's 7.2)")
    path = Path(spec)
    if "/" not in spec or not path.is_file():
        raise QemuUnavailable(f"--qemu {spec!r}: neither a QEMU series the project fetches "
                              f"({', '.join(SERIES)}) nor the path of a file")
    return QemuBinary(version_of(path, f"--qemu {spec}"), (str(path.resolve()),), "path")


def system_binary() -> QemuBinary | None:
    """Return the qemu-system-aarch64 on PATH, or None if there is none."""
    found = shutil.which(SYSTEM_BINARY)
    if found is None:
        return None
    return QemuBinary(version_of(Path(found), SYSTEM_BINARY), (found,), "system")


def version_of(binary: Path, what: str) -> str:
    """Return the "x.y.z" a QEMU binary's --version prints."""
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                              check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise QemuUnavailable(f"{what}: {binary} does not run: {error}") from None
    match = VERSION_RE.search(done.stdout)
    if done.returncode != 0 or match is None:
        tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise QemuUnavailable(f"{what}: {binary} --version did not name a QEMU version: {tail}")
    return ".".join(match.groups())


# --- The cache ---------------------------------------------------------------------------


@contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """Hold the cache's QEMU lock (parallel runs and test workers fetch once)."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".qemu.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def package_version(series: str) -> str:
    """Return the Debian package version fetched for a series."""
    return BACKPORTS[series]


def upstream_version(series: str) -> str:
    """Return the upstream QEMU version of the package fetched for a series ("10.0.2")."""
    return package_version(series).split(":")[-1].split("+")[0]


def fetched_binary(series: str, cache_dir: Path | None = None) -> QemuBinary:
    """Return the series' QEMU extracted in the cache, fetching it first if it is not there."""
    cache = cache_dir or default_cache_dir()
    root = cache / f"qemu-{upstream_version(series)}"
    binary = root / "usr" / "bin" / SYSTEM_BINARY
    source = f"debian {package_version(series)}"
    if not binary.exists():
        try:
            with cache_lock(cache):
                if not binary.exists():
                    extract_package(series, cache, root)
        except OSError as error:
            raise QemuUnavailable(f"--qemu {series}: cannot fetch into the cache {cache}: "
                                  f"{error.strerror or error}") from None
    version = version_of(binary, f"--qemu {series}")
    return QemuBinary(version, (str(binary),), source)


def extract_package(series: str, cache: Path, root: Path) -> None:
    """Download qemu-system-arm for a series and extract it (with its qemu-bundle) at root."""
    spec = f"qemu-system-arm={package_version(series)}"
    with tempfile.TemporaryDirectory(dir=cache, prefix=".qemu-fetch-") as work:
        run_tool(["apt-get", "download", spec], f"--qemu {series}: apt-get download {spec}",
                 Path(work))
        debs = sorted(Path(work).glob("qemu-system-arm_*.deb"))
        if not debs:
            raise QemuUnavailable(f"--qemu {series}: apt-get download {spec} left no .deb")
        tree = Path(work) / "tree"
        run_tool(["dpkg-deb", "-x", str(debs[0]), str(tree)],
                 f"--qemu {series}: dpkg-deb -x {debs[0].name}", Path(work))
        add_bundle(tree / "usr" / "bin")
        os.replace(tree, root)


def add_bundle(bindir: Path) -> None:
    """Create bindir/qemu-bundle: links to the system's data, firmware and configuration,
    and no module directory (see the module docstring)."""
    bundle = bindir / "qemu-bundle"
    for link in BUNDLE_LINKS:
        target = Path("/") / link
        where = bundle / link
        where.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            where.symlink_to(target)


def run_tool(argv: list[str], what: str, cwd: Path) -> None:
    """Run apt-get or dpkg-deb, raising QemuUnavailable with the last line of its errors."""
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise QemuUnavailable(f"{what}: {argv[0]} is not installed (a Debian system "
                              "provides it)") from None
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise QemuUnavailable(f"{what} failed: {tail}; {APT_HINT}")


def main(argv: list[str] | None = None) -> int:
    """Fetch the named series and print where it is (scripts/install-and-test.sh uses it)."""
    import sys

    specs = argv if argv is not None else sys.argv[1:]
    try:
        for spec in specs or list(SERIES):
            qemu = qemu_binary(spec)
            print(f"{qemu.label} ({qemu.source}): {' '.join(qemu.argv_prefix)}")
    except QemuUnavailable as error:
        print(f"s2mmu: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
