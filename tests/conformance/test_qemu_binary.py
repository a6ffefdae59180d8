"""Finding, fetching and naming a QEMU: the system's 7.2, Debian's 10.0, a path."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from s2mmu.conformance.qemu_binary import (
    BUNDLE_LINKS,
    QemuUnavailable,
    add_bundle,
    extract_package,
    fetched_binary,
    qemu_binary,
    upstream_version,
)
from s2mmu.conformance.target import expand_specs


def script(path: Path, body: str) -> Path:
    """Write an executable shell script."""
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_a_path_is_named_by_the_version_it_prints(tmp_path: Path) -> None:
    fake = script(tmp_path / "qemu-system-aarch64",
                  'echo "QEMU emulator version 9.2.3 (Debian 1:9.2.3+ds-1)"')
    got = qemu_binary(str(fake))
    assert (got.version, got.series, got.source) == ("9.2.3", "9.2", "path")
    assert got.argv_prefix == (str(fake.resolve()),)
    assert got.label == "QEMU 9.2.3"


def test_a_path_that_is_not_qemu_is_refused_with_its_output(tmp_path: Path) -> None:
    fake = script(tmp_path / "not-qemu", 'echo "oops" >&2; exit 3')
    with pytest.raises(QemuUnavailable, match=r"--version did not name a QEMU version: oops"):
        qemu_binary(str(fake))


def test_an_unknown_series_names_the_known_ones() -> None:
    with pytest.raises(QemuUnavailable, match=r"'8\.2': neither a QEMU series the project "
                                              r"fetches \(7\.2, 10\.0\) nor the path of a file"):
        qemu_binary("8.2")


def test_the_bundle_links_data_firmware_and_config_but_no_module_directory(
        tmp_path: Path) -> None:
    add_bundle(tmp_path)
    bundle = tmp_path / "qemu-bundle"
    for link in BUNDLE_LINKS:
        if (Path("/") / link).exists():
            assert (bundle / link).is_symlink()
            assert os.readlink(bundle / link) == "/" + link
    assert not (bundle / "usr" / "lib" / "x86_64-linux-gnu" / "qemu").exists()


def test_a_failed_download_says_what_to_add(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script(bin_dir / "apt-get", "echo \"E: Version '1:10.0.2' for 'qemu-system-arm' was not "
                                "found\" >&2; exit 100")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    root = tmp_path / "cache" / "qemu-10.0.2"
    root.parent.mkdir()
    with pytest.raises(QemuUnavailable, match=r"apt-get download qemu-system-arm=.* failed: "
                                              r"E: Version .* add Debian's bookworm-backports"):
        extract_package("10.0", root.parent, root)
    assert not root.exists()
    assert list(root.parent.iterdir()) == []


def test_the_fetched_version_is_the_packages_upstream_version() -> None:
    assert upstream_version("10.0") == "10.0.2"


def test_all_expands_to_every_measured_series_once() -> None:
    assert expand_specs(["all"]) == ["7.2", "10.0"]
    assert expand_specs(["10.0", "all", "10.0"]) == ["10.0", "7.2"]


def test_an_unwritable_cache_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    with pytest.raises(QemuUnavailable, match=r"--qemu 10.0: cannot fetch into the cache .*cache"):
        fetched_binary("10.0", blocker)
