"""Build the kernel's own arch/arm64/kvm/hyp/pgtable.c into a host shared library.

The kernel text is never part of s2mmu: it is read at run time from a source tarball
(Debian's ``linux-source-6.12`` installs /usr/src/linux-source-6.12.tar.xz) or from a
kernel tree the user points at. Only the files pgtable.c needs are extracted into a cache
directory; they are compiled unmodified with s2mmu's own shim header (csrc/shim.h,
force-included) and glue (csrc/glue.c: mm_ops over a page pool, event recorders, a flat
API for ctypes). The kernel version comes from the top Makefile and picks the model's
behaviour profile.

Kernel: arch/arm64/kvm/hyp/pgtable.c, arch/arm64/include/asm/kvm_pgtable.h,
arch/arm64/include/asm/stage2_pgtable.h, Makefile (VERSION, PATCHLEVEL, SUBLEVEL).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from s2mmu.arch.errors import InputError
from s2mmu.pgtable.profile import PRE_V6_3, V6_3, V6_19, BehaviourProfile

MEMBERS = (
    "Makefile",
    "arch/arm64/kvm/hyp/pgtable.c",
    "arch/arm64/include/asm/kvm_pgtable.h",
    "arch/arm64/include/asm/stage2_pgtable.h",
)
"""The kernel files the build needs, relative to the top of the tree."""

DEFAULT_TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
"""Where Debian's linux-source-6.12 package puts the kernel source."""

SUPPORTED = ((6, 1), (6, 12))
"""Kernel series whose pgtable.c interfaces the glue is written for (KG_LINUX 601, 612)."""

STUB_HEADERS = ("linux/bitfield.h", "linux/bits.h", "linux/kvm_host.h", "linux/types.h",
                "linux/pgtable.h")
"""Headers the kernel files include; the shim defines what they would, so they are empty."""

CFLAGS = ("-O2", "-fPIC", "-shared", "-Wall", "-Wextra", "-Wno-unused-parameter",
          "-Wno-sign-compare")

INSTALL_HINT = "apt-get install linux-source-6.12"


def series_code(version: KernelVersion) -> int:
    """Return the glue's KG_LINUX for a kernel: VERSION * 100 + PATCHLEVEL."""
    return version.version * 100 + version.patchlevel


@dataclass(frozen=True)
class KernelVersion:
    """A kernel release as its top Makefile states it."""

    version: int
    patchlevel: int
    sublevel: int

    def __str__(self) -> str:
        return f"{self.version}.{self.patchlevel}.{self.sublevel}"


@dataclass(frozen=True)
class KernelBuild:
    """A built library: where it is, which kernel it came from, what it cost."""

    library: Path
    source: Path
    version: KernelVersion
    profile: BehaviourProfile
    extract_seconds: float
    compile_seconds: float
    cached: bool


def profile_for(version: KernelVersion) -> BehaviourProfile:
    """Return the model behaviour profile standing for a kernel release."""
    key = (version.version, version.patchlevel)
    if key < (6, 3):
        return PRE_V6_3
    if key < (6, 19):
        return V6_3
    return V6_19


def parse_makefile_version(text: str) -> KernelVersion:
    """Return VERSION.PATCHLEVEL.SUBLEVEL from a kernel's top Makefile, or raise InputError."""
    fields = {}
    for name in ("VERSION", "PATCHLEVEL", "SUBLEVEL"):
        m = re.search(rf"^{name}\s*=\s*(\d+)\s*$", text, re.MULTILINE)
        if m is None:
            raise InputError(f"kernel Makefile: no {name} = N line; is this a kernel tree?")
        fields[name] = int(m.group(1))
    return KernelVersion(fields["VERSION"], fields["PATCHLEVEL"], fields["SUBLEVEL"])


def default_cache_dir() -> Path:
    """Return $XDG_CACHE_HOME/s2mmu/kernel (~/.cache/s2mmu/kernel by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "s2mmu" / "kernel"


def find_source(source: str | None) -> Path:
    """Return the kernel source to use: the one given, $S2MMU_KERNEL_SOURCE, or Debian's."""
    chosen = source or os.environ.get("S2MMU_KERNEL_SOURCE")
    if chosen:
        path = Path(chosen)
        if not path.exists():
            raise InputError(f"kernel source {chosen}: no such file or directory")
        return path
    if DEFAULT_TARBALL.exists():
        return DEFAULT_TARBALL
    raise InputError(f"no kernel source: {DEFAULT_TARBALL} is missing "
                     f"(install it with `{INSTALL_HINT}`) and no --source was given")


def find_compiler() -> str:
    """Return the C compiler ($CC or gcc), or raise InputError saying what to install."""
    cc = os.environ.get("CC") or "gcc"
    path = shutil.which(cc)
    if path is None:
        raise InputError(f"no C compiler: {cc} is not on PATH "
                         "(install it with `apt-get install gcc libc6-dev`, or set CC)")
    return path


def _glue_files() -> tuple[bytes, bytes]:
    csrc = resources.files(__package__).joinpath("csrc")
    return csrc.joinpath("shim.h").read_bytes(), csrc.joinpath("glue.c").read_bytes()


def _source_key(source: Path) -> str:
    st = source.stat()
    shim, glue = _glue_files()
    h = hashlib.sha256()
    for part in (str(source.resolve()).encode(), str(st.st_size).encode(),
                 str(st.st_mtime_ns).encode(), shim, glue):
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def extract_members(source: Path, dest: Path) -> None:
    """Copy the needed kernel files from a tarball or a tree into dest (same layout).

    A tarball is read as a stream and left as soon as every member has been seen.
    """
    if source.is_dir():
        for member in MEMBERS:
            src = source / member
            if not src.is_file():
                raise InputError(f"kernel tree {source}: {member} is missing")
            (dest / member).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest / member)
        return
    wanted = set(MEMBERS)
    try:
        with tarfile.open(source, mode="r|*") as tar:
            for info in tar:
                top, _, rest = info.name.partition("/")
                if rest not in wanted or not info.isfile():
                    continue
                data = tar.extractfile(info)
                if data is None:
                    continue
                (dest / rest).parent.mkdir(parents=True, exist_ok=True)
                (dest / rest).write_bytes(data.read())
                wanted.discard(rest)
                if not wanted:
                    break
    except (tarfile.TarError, OSError, EOFError) as e:
        raise InputError(f"kernel source {source}: not a readable tarball ({e})") from None
    if wanted:
        raise InputError(f"kernel source {source}: {sorted(wanted)[0]} is not in the tarball")


def compile_library(cc: str, tree: Path, out: Path, version: KernelVersion) -> None:
    """Compile tree's pgtable.c with the shim and glue into the shared library out."""
    shim, glue = _glue_files()
    work = out.parent
    (work / "shim.h").write_bytes(shim)
    (work / "glue.c").write_bytes(glue)
    inc = work / "include"
    for h in STUB_HEADERS:
        (inc / h).parent.mkdir(parents=True, exist_ok=True)
        (inc / h).write_text("/* s2mmu: defined by shim.h */\n")
    for h in ("kvm_pgtable.h", "stage2_pgtable.h"):
        (inc / "asm").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tree / "arch/arm64/include/asm" / h, inc / "asm" / h)
    tmp = out.with_suffix(".tmp.so")
    cmd = [cc, *CFLAGS, f"-DKG_LINUX={series_code(version)}", "-include", str(work / "shim.h"), f"-I{inc}", "-o", str(tmp),
           str(tree / "arch/arm64/kvm/hyp/pgtable.c"), str(work / "glue.c")]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if "error" in line]
        first = errors[0] if errors else proc.stderr.strip().splitlines()[-1:] or ["?"]
        raise InputError(f"compiling the kernel's pgtable.c failed: {first}")
    tmp.replace(out)


def build(source: str | None = None, cache: str | None = None) -> KernelBuild:
    """Return the built library for a kernel source, building it unless cached.

    Raises InputError (one line) when the source, the compiler or the version is wrong.
    """
    src = find_source(source)
    root = Path(cache) if cache else default_cache_dir()
    where = root / _source_key(src)
    lib = where / "libkpgtable.so"
    tree = where / "tree"
    if lib.is_file() and (tree / "Makefile").is_file():
        version = parse_makefile_version((tree / "Makefile").read_text(errors="replace"))
        return KernelBuild(lib, src, version, profile_for(version), 0.0, 0.0, cached=True)
    cc = find_compiler()
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=root) as tmpdir:
        tmp_tree = Path(tmpdir) / "tree"
        extract_members(src, tmp_tree)
        version = parse_makefile_version((tmp_tree / "Makefile").read_text(errors="replace"))
        if (version.version, version.patchlevel) not in SUPPORTED:
            raise InputError(f"kernel {version} from {src}: the harness knows the 6.1 and "
                             "6.12 interfaces of pgtable.c only; use linux-source-6.12 "
                             "or linux-source-6.1")
        t1 = time.perf_counter()
        tmp_lib = Path(tmpdir) / "libkpgtable.so"
        compile_library(cc, tmp_tree, tmp_lib, version)
        t2 = time.perf_counter()
        where.mkdir(parents=True, exist_ok=True)
        if tree.exists():
            shutil.rmtree(tree)
        shutil.move(str(tmp_tree), tree)
        tmp_lib.replace(lib)
    return KernelBuild(lib, src, version, profile_for(version), t1 - t0, t2 - t1, cached=False)
