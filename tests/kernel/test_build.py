"""Building the kernel's pgtable.c: source lookup, extraction, version, profile, errors."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from s2mmu.arch.errors import InputError
from s2mmu.kernel import build as kb
from s2mmu.kernel.binding import KernelPgtable
from s2mmu.kernel.build import KernelBuild, KernelVersion, parse_makefile_version, profile_for
from s2mmu.kernel.diff import parse_ops, run_diff
from s2mmu.pgtable.profile import V6_1, V6_6, V6_12, V6_18, V6_19

MAKEFILE = "# SPDX\nVERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 118\nEXTRAVERSION =\n"


def test_the_version_comes_from_the_top_makefile() -> None:
    assert parse_makefile_version(MAKEFILE) == KernelVersion(6, 12, 118)
    assert str(parse_makefile_version(MAKEFILE)) == "6.12.118"


def test_a_makefile_without_sublevel_is_refused_by_name() -> None:
    with pytest.raises(InputError, match=r"^kernel Makefile: no SUBLEVEL = N line; is this a "
                                         r"kernel tree\?$"):
        parse_makefile_version("VERSION = 6\nPATCHLEVEL = 12\n")


@pytest.mark.parametrize(("version", "profile"), [
    (KernelVersion(6, 1, 192), V6_1), (KernelVersion(6, 3, 0), V6_6),
    (KernelVersion(6, 12, 118), V6_12), (KernelVersion(6, 18, 1), V6_18),
    (KernelVersion(6, 19, 0), V6_19),
])
def test_the_kernel_version_picks_the_behaviour_profile(version: KernelVersion,
                                                        profile: object) -> None:
    assert profile_for(version) is profile


def test_a_missing_source_is_one_line_naming_it() -> None:
    with pytest.raises(InputError, match="^kernel source /nonexistent/x.tar.xz: no such file"):
        kb.find_source("/nonexistent/x.tar.xz")


def test_no_default_source_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.delenv("S2MMU_KERNEL_SOURCE", raising=False)
    monkeypatch.setattr(kb, "DEFAULT_TARBALL", tmp_path / "linux-source-6.12.tar.xz")
    with pytest.raises(InputError, match=r"install it with `apt-get install linux-source-6.12`"):
        kb.find_source(None)


def test_a_missing_compiler_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "no-such-cc-s2mmu")
    with pytest.raises(InputError, match=r"^no C compiler: no-such-cc-s2mmu is not on PATH "
                                         r"\(install it with `apt-get install gcc libc6-dev`"):
        kb.find_compiler()


def _tarball(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:xz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"linux-x/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_only_the_needed_members_are_extracted(tmp_path: Path) -> None:
    files = {m: f"/* {m} */\n" for m in kb.MEMBERS} | {"README": "not needed\n"}
    src = _tarball(tmp_path / "k.tar.xz", files)
    kb.extract_members(src, tmp_path / "out")
    got = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*")
                 if p.is_file())
    assert got == sorted(kb.MEMBERS)


def test_a_tarball_without_pgtable_c_is_refused_by_member(tmp_path: Path) -> None:
    src = _tarball(tmp_path / "k.tar.xz", {"Makefile": MAKEFILE})
    with pytest.raises(InputError, match=r"k.tar.xz: arch/arm64/include/asm/kvm_pgtable.h is "
                                         r"not in the tarball$"):
        kb.extract_members(src, tmp_path / "out")


def test_an_unsupported_kernel_series_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "linux"
    for m in kb.MEMBERS:
        (tree / m).parent.mkdir(parents=True, exist_ok=True)
        (tree / m).write_text("/* */\n")
    (tree / "Makefile").write_text(MAKEFILE.replace("12", "6"))
    with pytest.raises(InputError, match=r"^kernel 6.6.118 from .*: the harness knows the 6.1 "
                                         r"and 6.12 interfaces of pgtable.c only"):
        kb.build(str(tree), str(tmp_path / "cache"))


def test_the_installed_source_builds_and_is_then_cached(kernel_build: KernelBuild,
                                                       kernel_cache: Path) -> None:
    assert (kernel_build.version.version, kernel_build.version.patchlevel) == (6, 12)
    assert kernel_build.profile is V6_12
    assert kernel_build.library.is_file()
    again = kb.build(None, str(kernel_cache))
    assert again.cached and again.library == kernel_build.library


WRPROTECT_CLEARS_W = "KVM_PTE_LEAF_ATTR_LO_S2_S2AP_W,\n\t\t\t\t\tNULL, NULL, 0);"


def test_a_patched_kernel_tree_builds_and_the_diff_catches_its_bug(
        kernel_build: KernelBuild, tmp_path: Path) -> None:
    """A developer's tree (here the installed source with a wrprotect that clears no
    permission) builds like the tarball, and the differential shows the patch's effect."""
    tree = tmp_path / "linux"
    kb.extract_members(kernel_build.source, tree)
    pgtable_c = tree / "arch/arm64/kvm/hyp/pgtable.c"
    text = pgtable_c.read_text()
    assert text.count(WRPROTECT_CLEARS_W) == 1
    pgtable_c.write_text(text.replace(WRPROTECT_CLEARS_W, "0,\n\t\t\t\t\tNULL, NULL, 0);"))
    b = kb.build(str(tree), str(tmp_path / "cache"))
    assert (b.source, b.version, b.profile) == (tree, kernel_build.version, kernel_build.profile)
    k = KernelPgtable(b.library)
    ok = run_diff(k, b.profile, ops=0, seed=0, replay=parse_ops("map 0x0 0x1000 0x100000000 RW"))
    assert ok.agreed == ok.compared == 1
    bad = run_diff(k, b.profile, ops=0, seed=0,
                   replay=parse_ops("map 0x0 0x1000 0x100000000 RW; wrprotect 0x0 0x1000"))
    assert bad.agreed == 1 and bad.compared == 2
    [(result, _)] = bad.differences
    assert result.difference is not None and result.difference.what.startswith("descriptor at")
