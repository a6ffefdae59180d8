"""Build the kernel's own pgtable.c (and, from 6.12, at.c) into host shared libraries.

The kernel text is never part of s2mmu: it is read at run time from a source tarball
(Debian's ``linux-source-6.12`` installs /usr/src/linux-source-6.12.tar.xz) or from a
kernel tree the user points at. Only the files pgtable.c needs are extracted into a cache
directory; they are compiled unmodified with s2mmu's own shim header (csrc/shim.h,
force-included) and glue (csrc/glue.c: mm_ops over a page pool, event recorders, a flat
API for ctypes). The kernel version comes from the top Makefile and picks the model's
behaviour profile.

From 6.12 on, arch/arm64/kvm/at.c (the AT emulation's software walker) is built too,
into a second library, with s2mmu's csrc/at_shim.h and csrc/at_glue.c; its register
constants come from the kernel's own asm/sysreg.h, asm/esr.h, asm/kvm_arm.h and
asm/pgtable-hwdef.h, with the sysreg-defs.h that the kernel's own
arch/arm64/tools/gen-sysreg.awk generates from arch/arm64/tools/sysreg (run with awk).

The stage-2 granule is the host's PAGE_SIZE, so each granule is its own library variant:
pgtable.c compiled with PAGE_SHIFT 12, 14 or 16 (CONFIG_ARM64_4K/16K/64K_PAGES), kept
side by side in the cache (libkpgtable.so for 4K, libkpgtable-16k.so, libkpgtable-64k.so).
at.c is built once per source (its guest granules do not depend on the host's).

Kernel: arch/arm64/kvm/hyp/pgtable.c, arch/arm64/include/asm/kvm_pgtable.h,
arch/arm64/include/asm/stage2_pgtable.h, Makefile (VERSION, PATCHLEVEL, SUBLEVEL);
arch/arm64/kvm/at.c and the headers above (6.12).
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
from s2mmu.pgtable.profile import BehaviourProfile, profile_for_release

MEMBERS = (
    "Makefile",
    "arch/arm64/kvm/hyp/pgtable.c",
    "arch/arm64/include/asm/kvm_pgtable.h",
    "arch/arm64/include/asm/stage2_pgtable.h",
)
"""The kernel files the build needs, relative to the top of the tree."""

AT_MEMBERS = (
    "arch/arm64/kvm/at.c",
    "arch/arm64/include/asm/sysreg.h",
    "arch/arm64/include/asm/esr.h",
    "arch/arm64/include/asm/kvm_arm.h",
    "arch/arm64/include/asm/pgtable-hwdef.h",
    "arch/arm64/include/asm/gpr-num.h",
    "arch/arm64/tools/sysreg",
    "arch/arm64/tools/gen-sysreg.awk",
)
"""The kernel files at.c's build needs (6.12 on; 6.1 has no software AT walker)."""

AT_SINCE = (6, 12)
"""The first series whose at.c the harness builds."""

AT_STUB_HEADERS = ("asm/alternative.h", "asm/memory.h", "asm/types.h", "asm/kvm_hyp.h",
                   "asm/kvm_mmu.h", "linux/bitfield.h", "linux/bits.h", "linux/build_bug.h",
                   "linux/kasan-tags.h", "linux/stringify.h", "linux/types.h",
                   "linux/kvm_host.h")
"""Headers at.c and the kernel's register headers include; at_shim.h defines their part."""

AT_CFLAGS = ("-Wno-unused-but-set-variable",)

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

GRANULES = {"4k": 12, "16k": 14, "64k": 16}
"""Host granules (PAGE_SHIFT) the library can be built for."""


def library_name(page_shift: int) -> str:
    """Return the cached library's file name for a granule (4K keeps the plain name)."""
    return "libkpgtable.so" if page_shift == 12 else f"libkpgtable-{1 << (page_shift - 10)}k.so"


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
    at_library: Path | None
    source: Path
    version: KernelVersion
    profile: BehaviourProfile
    extract_seconds: float
    compile_seconds: float
    cached: bool
    page_shift: int = 12


def profile_for(version: KernelVersion) -> BehaviourProfile:
    """Return the model behaviour profile standing for a kernel release."""
    return profile_for_release(version.version, version.patchlevel)


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


def _at_glue_files() -> tuple[bytes, bytes]:
    csrc = resources.files(__package__).joinpath("csrc")
    return csrc.joinpath("at_shim.h").read_bytes(), csrc.joinpath("at_glue.c").read_bytes()


def _source_key(source: Path) -> str:
    st = source.stat()
    shim, glue = _glue_files()
    h = hashlib.sha256()
    for part in (str(source.resolve()).encode(), str(st.st_size).encode(),
                 str(st.st_mtime_ns).encode(), shim, glue, *_at_glue_files()):
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def extract_members(source: Path, dest: Path) -> None:
    """Copy the needed kernel files from a tarball or a tree into dest (same layout).

    MEMBERS must all be there; AT_MEMBERS are taken where present (a kernel without
    at.c gets no AT library). A tarball is read as a stream and left as soon as every
    member has been seen.
    """
    if source.is_dir():
        for member in MEMBERS + AT_MEMBERS:
            src = source / member
            if not src.is_file():
                if member in AT_MEMBERS:
                    continue
                raise InputError(f"kernel tree {source}: {member} is missing")
            (dest / member).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest / member)
        return
    wanted = set(MEMBERS + AT_MEMBERS)
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
    missing = sorted(wanted - set(AT_MEMBERS))
    if missing:
        raise InputError(f"kernel source {source}: {missing[0]} is not in the tarball")


def compile_library(cc: str, tree: Path, out: Path, version: KernelVersion,
                    page_shift: int = 12) -> None:
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
    cmd = [cc, *CFLAGS, f"-DKG_LINUX={series_code(version)}", f"-DKG_PAGE_SHIFT={page_shift}",
           "-include", str(work / "shim.h"),
           f"-I{inc}", "-o", str(tmp), str(tree / "arch/arm64/kvm/hyp/pgtable.c"),
           str(work / "glue.c")]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if "error" in line]
        first = errors[0] if errors else proc.stderr.strip().splitlines()[-1:] or ["?"]
        raise InputError(f"compiling the kernel's pgtable.c failed: {first}")
    tmp.replace(out)


def has_at(tree: Path) -> bool:
    """Return whether tree holds every file at.c's build needs."""
    return all((tree / m).is_file() for m in AT_MEMBERS)


def compile_at_library(cc: str, tree: Path, out: Path) -> None:
    """Compile tree's at.c with the AT shim and glue into the shared library out.

    The kernel's gen-sysreg.awk turns its arch/arm64/tools/sysreg into sysreg-defs.h.
    """
    shim, glue = _at_glue_files()
    work = out.parent / "at"
    inc = work / "include"
    (inc / "asm").mkdir(parents=True, exist_ok=True)
    (work / "at_shim.h").write_bytes(shim)
    (work / "at_glue.c").write_bytes(glue)
    for h in AT_STUB_HEADERS:
        (inc / h).parent.mkdir(parents=True, exist_ok=True)
        (inc / h).write_text("/* s2mmu: defined by at_shim.h */\n")
    for h in ("sysreg.h", "esr.h", "kvm_arm.h", "pgtable-hwdef.h", "gpr-num.h"):
        shutil.copyfile(tree / "arch/arm64/include/asm" / h, inc / "asm" / h)
    awk = shutil.which("awk")
    if awk is None:
        raise InputError("no awk on PATH: at.c's build runs the kernel's gen-sysreg.awk "
                         "(install it with `apt-get install mawk`)")
    tools = tree / "arch/arm64/tools"
    gen = subprocess.run([awk, "-f", str(tools / "gen-sysreg.awk"), str(tools / "sysreg")],
                         capture_output=True, text=True, check=False)
    if gen.returncode != 0:
        raise InputError(f"generating sysreg-defs.h failed: {gen.stderr.strip()[:200]}")
    (inc / "asm" / "sysreg-defs.h").write_text(gen.stdout)
    tmp = out.with_suffix(".tmp.so")
    cmd = [cc, *CFLAGS, *AT_CFLAGS, "-include", str(work / "at_shim.h"), f"-I{inc}",
           "-o", str(tmp), str(tree / "arch/arm64/kvm/at.c"), str(work / "at_glue.c")]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if "error" in line]
        first = errors[0] if errors else proc.stderr.strip().splitlines()[-1:] or ["?"]
        raise InputError(f"compiling the kernel's at.c failed: {first}")
    tmp.replace(out)


def build(source: str | None = None, cache: str | None = None,
          page_shift: int = 12) -> KernelBuild:
    """Return the built library for a kernel source and granule, building it unless cached.

    Raises InputError (one line) when the source, the compiler or the version is wrong.
    """
    if page_shift not in GRANULES.values():
        raise InputError(f"kernel build: PAGE_SHIFT {page_shift} is not 12, 14 or 16")
    src = find_source(source)
    root = Path(cache) if cache else default_cache_dir()
    where = root / _source_key(src)
    lib = where / library_name(page_shift)
    at_lib = where / "libkat.so"
    tree = where / "tree"
    if (tree / "Makefile").is_file():
        version = parse_makefile_version((tree / "Makefile").read_text(errors="replace"))
        at = at_lib if at_lib.is_file() else None
        if lib.is_file():
            return KernelBuild(lib, at, src, version, profile_for(version), 0.0, 0.0,
                               cached=True, page_shift=page_shift)
        if (version.version, version.patchlevel) in SUPPORTED:
            t0 = time.perf_counter()
            tmp = where / f"granule-{page_shift}"
            tmp.mkdir(exist_ok=True)
            compile_library(find_compiler(), tree, tmp / lib.name, version, page_shift)
            (tmp / lib.name).replace(lib)
            shutil.rmtree(tmp, ignore_errors=True)
            return KernelBuild(lib, at, src, version, profile_for(version), 0.0,
                               time.perf_counter() - t0, cached=False, page_shift=page_shift)
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
        tmp_lib = Path(tmpdir) / lib.name
        compile_library(cc, tmp_tree, tmp_lib, version, page_shift)
        tmp_at = Path(tmpdir) / "libkat.so"
        with_at = (version.version, version.patchlevel) >= AT_SINCE and has_at(tmp_tree)
        if with_at:
            compile_at_library(cc, tmp_tree, tmp_at)
        t2 = time.perf_counter()
        where.mkdir(parents=True, exist_ok=True)
        if tree.exists():
            shutil.rmtree(tree)
        shutil.move(str(tmp_tree), tree)
        if with_at:
            tmp_at.replace(at_lib)
        tmp_lib.replace(lib)
    return KernelBuild(lib, at_lib if at_lib.is_file() else None, src, version,
                       profile_for(version), t1 - t0, t2 - t1, cached=False,
                       page_shift=page_shift)
