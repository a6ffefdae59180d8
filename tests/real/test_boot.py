"""The initramfs, QEMU's command line and the kernel's resolution (no boot here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from s2mmu.arch.errors import InputError
from s2mmu.real.boot import Mode, extract_image, initramfs, qemu_command, resolve_kernel


def test_initramfs_is_a_newc_cpio_with_init_plans_and_console(tmp_path: Path) -> None:
    if shutil.which("cpio") is None:
        pytest.skip("cpio is not installed")
    data = initramfs(b"\x7fELF-vmm", [("000-a.plan", "scenario a\n"), ("001-b.plan", "x\n")])
    assert len(data) % 512 == 0
    listing = subprocess.run(["cpio", "-itv"], input=data, capture_output=True, check=True)
    lines = listing.stdout.decode().splitlines()
    names = [line.split()[-1] for line in lines]
    assert names == ["dev", "proc", "sys", "plans", "init", "plans/000-a.plan",
                     "plans/001-b.plan", "dev/console"]
    assert lines[4].startswith("-rwxr-xr-x") and lines[-1].startswith("crw-------")
    out = subprocess.run(["cpio", "-i", "--to-stdout", "plans/000-a.plan"], input=data,
                         capture_output=True, check=True)
    assert out.stdout == b"scenario a\n"


def test_qemu_command_has_el2_gicv3_and_no_pointer_authentication() -> None:
    cmd = qemu_command(Path("/k"), Path("/i"), Mode.PROTECTED)
    assert cmd[cmd.index("-M") + 1] == "virt,virtualization=on,gic-version=3"
    assert cmd[cmd.index("-cpu") + 1] == "max,pauth=off"
    assert "kvm-arm.mode=protected" in cmd[cmd.index("-append") + 1]
    assert "kvm-arm.mode" not in " ".join(qemu_command(Path("/k"), Path("/i"), Mode.VHE))


def test_kernel_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--kernel /nonexistent: no such file"):
        resolve_kernel("/nonexistent", tmp_path)


def test_a_raw_image_is_booted_as_given(tmp_path: Path) -> None:
    image = tmp_path / "Image"
    image.write_bytes(b"MZ")
    assert resolve_kernel(str(image), tmp_path).image == image


def test_a_deb_that_is_not_a_package(tmp_path: Path) -> None:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    bad = tmp_path / "x.deb"
    bad.write_bytes(b"junk")
    with pytest.raises(InputError, match="not a Debian package"):
        extract_image(bad, tmp_path)
