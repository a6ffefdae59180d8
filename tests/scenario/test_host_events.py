"""Host events in a scenario: the THP partial-munmap reproducer, and refusals as errno."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from s2mmu.cli.main import cli

REPRODUCER = """
[host]
features = ["fwb", "dic"]

[[vma]]
start = 0x7f0000000000
size = "2M"
thp = true

[[memslot]]
id = 0
gpa = 0x40000000
size = "2M"
hva = 0x7f0000000000
flags = ["log_dirty_pages"]

[[event]]
do = "read"
ipa = 0x40000000

[[event]]
do = "munmap"
hva = 0x7f0000001000
size = "4K"
"""

AFTER = """
[[event]]
do = "read"
ipa = 0x40000000

[[event]]
do = "read"
ipa = 0x40001000

[[event]]
do = "read"
ipa = 0x40002000
"""


def run_json(tmp_path: Path, text: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    f = tmp_path / "s.toml"
    f.write_text(text)
    result = CliRunner().invoke(cli, ["run", str(f), "--json"])
    return result.exit_code, json.loads(result.output)


def kvm_summary(report: dict[str, Any]) -> dict[str, Any]:
    """Return the kvm layer's summary of an s2mmu.run/2 document."""
    summary: dict[str, Any] = report["summary"]["layers"]["kvm"]
    return summary


def test_a_4k_munmap_inside_a_logged_thp_leaves_stage2_and_the_host_agreeing(
        tmp_path: Path) -> None:
    code, report = run_json(tmp_path, REPRODUCER)
    assert code == 0 and report["failures"] == []
    assert report["steps"][1]["result"]["pa"] == "0x1000000000"  # the THP's first page
    assert kvm_summary(report)["mappings"] == {}  # split_huge_pmd invalidated the whole 2M
    assert kvm_summary(report)["mmu_invalidate_seq"] == 2  # the split, then the 4K unmap
    assert report["steps"][2]["result"]["errno"] == 0


def test_after_the_munmap_the_rest_of_the_thp_is_mapped_at_the_same_pas(tmp_path: Path) -> None:
    code, report = run_json(tmp_path, REPRODUCER + AFTER)
    assert code == 0 and report["failures"] == []
    first, hole, third = report["steps"][3:]
    assert first["outcome"] == "completed" and first["result"]["pa"] == "0x1000000000"
    assert hole["outcome"] == "error"
    assert "no VMA at HVA 0x7f0000001000" in hole["faults"][0]["result"]["text"]
    assert third["outcome"] == "completed" and third["result"]["pa"] == "0x1000002000"
    assert kvm_summary(report)["mappings"] == {"4K": 2}


def test_a_refused_munmap_shows_its_errno_and_expect_errno_checks_it(tmp_path: Path) -> None:
    hugetlb = REPRODUCER.replace('thp = true', 'kind = "hugetlb"\nhugetlb = "2M"').replace(
        'flags = ["log_dirty_pages"]\n', '')
    code, report = run_json(tmp_path, hugetlb + 'expect_errno = "EINVAL"\n')
    assert code == 0 and report["steps"][2]["result"]["errno"] == -22
    assert report["steps"][2]["summary"] == "munmap HVA 0x7f0000001000+4K: -EINVAL"
    assert kvm_summary(report)["mappings"] == {"2M": 1}
    f = tmp_path / "bad.toml"
    f.write_text(hugetlb + 'expect_errno = "ENOMEM"\n')
    result = CliRunner().invoke(cli, ["run", str(f)])
    assert result.exit_code == 1
    assert "expected errno ENOMEM, got -EINVAL" in result.output


def test_madvise_over_a_hole_is_enomem(tmp_path: Path) -> None:
    text = REPRODUCER.replace('do = "munmap"', 'do = "madvise"').replace(
        'hva = 0x7f0000001000\nsize = "4K"', 'hva = 0x7f0000000000\nsize = "4M"')
    code, report = run_json(tmp_path, text + 'expect_errno = "ENOMEM"\n')
    assert code == 0 and report["steps"][2]["result"]["errno"] == -12
    assert kvm_summary(report)["mappings"] == {}
