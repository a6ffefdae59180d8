"""Issue 10's evidence: EL2 AT cases run as a guest hypervisor's AT through KVM's emulation.

Against QEMU 7.2 (the harness's own generator, a fixed seed), and without QEMU: the
emulation against the architecture model on the same generated states (offset guest
memory, every granule, shadow stage 2 filled by L2's accesses), and its fast path
against its slow path where KVM trusts the fast path. Every difference must be a listed
KVM difference (s2mmu.nested.differences) or a listed QEMU 7.2 departure.
"""

from __future__ import annotations

import json
import os
from typing import Any

from click.testing import CliRunner

from s2mmu.arch import atcase
from s2mmu.arch.features import qemu_7_2_max
from s2mmu.cli.conformance_cmd import conformance
from s2mmu.cli.schemas import validate
from s2mmu.conformance.casefile import parse_case
from s2mmu.conformance.compare import AGREE, DIVERGENCE, MISMATCH, Report, model_answer
from s2mmu.conformance.nested import (
    HOST_OFFSET,
    KVM_NORMALISERS,
    compare_nested_case,
    compare_nested_cases,
    compare_nested_op,
    el2_case,
    explain_kvm,
    generate_nested_cases,
    l1_machine,
    l2_touch,
    nested_answer,
    nested_evidence,
    path_counts,
)
from s2mmu.conformance.qemu import QemuConfig
from s2mmu.nested.at import CURRENT, V6_12, handle_at_slow, kvm_at, slow_par
from s2mmu.nested.differences import BY_NAME
from tests.conformance.conftest import requires_qemu

FAMILIES = ["s1_4k", "s1_16k", "s1_64k", "lpa2", "ttbr_tbi_epd", "blocks_contig",
            "invalid_junk", "perms", "af_dirty", "addr_size", "big_endian", "stage2", "s1ptw",
            "dc_cd", "el2", "el20", "el1_exec", "broken"]
QEMU_CASES = 250
"""About 2,400 EL2 ops against QEMU in the default suite."""


def explain(report: Report) -> str:
    """Return the first mismatches, readably, for an assertion message."""
    lines = []
    for case, op in report.mismatches()[:8]:
        if op is None:
            lines.append(f"{case.case.name}: memory QEMU {case.qemu['memory_changes']} "
                         f"KVM {case.model['memory_changes']}")
        else:
            lines.append(f"{case.case.name} op {op.index}: QEMU {op.qemu} KVM {op.model}")
    return "\n".join(lines)


@requires_qemu
def test_el2_cases_through_kvms_at_emulation_agree_with_qemu(qemu_config: QemuConfig) -> None:
    seed = int(os.environ.get("S2MMU_CONFORMANCE_SEED", "2024"))
    report = compare_nested_cases(generate_nested_cases(QEMU_CASES, seed, FAMILIES), qemu_config)
    assert len(report.ops()) >= 2000
    assert not report.harness_errors(), report.harness_errors()[0][1].qemu
    assert not report.mismatches(), f"seed {seed}:\n{explain(report)}"
    assert report.tally().counts[AGREE] > len(report.ops()) // 2
    paths = path_counts(report)
    assert paths["fast"] > 500 and paths["slow"] > 500, paths
    seen = {part.split(":", 1)[1] for name in report.divergences() for part in name.split("+")
            if part.startswith("kvm:")}
    assert {"AT_PAR_NS", "AT_S2_REFUSED_WALK", "AT_VA_ADDRSZ"} <= seen <= set(BY_NAME)


@requires_qemu
def test_the_first_software_walker_release_agrees_too(qemu_config: QemuConfig) -> None:
    cases = generate_nested_cases(40, 7, ["af_dirty", "stage2", "el2"])
    report = compare_nested_cases(cases, qemu_config, V6_12)
    assert not report.mismatches(), explain(report)


# --- Without QEMU: the emulation against the architecture on the same states -----------


def as_qemu(obj: dict[str, Any]) -> dict[str, Any]:
    """Return the architecture model's answer standing in for QEMU's."""
    return dict(model_answer(obj))


def test_emulation_equals_the_architecture_outside_listed_kvm_differences() -> None:
    """For generated guest states, PAR_EL1 from kvm_at (fast and slow) is the architecture's
    AT on the same state, outside the listed KVM differences; nothing is left unexplained."""
    names: set[str] = set()
    for obj in generate_nested_cases(90, 31, FAMILIES):
        case = parse_case(obj, 0)
        got = compare_nested_case(case, as_qemu(obj), CURRENT)
        for op in got.ops:
            assert op.verdict in (AGREE, DIVERGENCE), (case.name, op.index, op.qemu, op.model)
            assert op.divergence is None or "qemu:" not in op.divergence
            names |= set((op.divergence or "").split("+")) - {""}
        assert got.memory_verdict != MISMATCH, case.name
    assert {"kvm:AT_PAR_NS", "kvm:AT_S12_PAR_BIT11"} <= names


def test_slow_path_equals_the_architecture_outside_listed_kvm_differences() -> None:
    """The slow path alone (handle_at_slow, compute_par_s1) on generated guest states:
    PAR_EL1 is the architecture's AT on the same state walked directly, outside the
    listed KVM differences."""
    fs = qemu_7_2_max()
    checked = differing = 0
    for whole in generate_nested_cases(60, 17, FAMILIES):
        for op in whole["ops"]:
            obj = {**whole, "ops": [op]}     # each op alone: memory as the case gives it
            at_case = atcase.parse_case(obj)
            spec = at_case.ops[0]
            if spec.op.stage != 1:
                continue
            m = l1_machine(at_case, fs)
            ctx = m.context(CURRENT)
            slow = slow_par(ctx, handle_at_slow(ctx, m.regs, spec.pan, spec.op, spec.va))
            arch = int(model_answer(obj)["ops"][0]["PAR_EL1"], 16)
            checked += 1
            if slow != arch:
                differing += 1
                ev = nested_evidence(parse_case(obj, 0), 0, {}, slow, arch, fs)
                assert explain_kvm(ev) is not None, (whole["name"], op, hex(slow), hex(arch))
    assert checked > 300 and differing > 20


def test_fast_path_and_slow_path_agree_where_kvm_trusts_the_fast_path() -> None:
    """On generated states, every op KVM answers from the fast path gives the slow path's
    PAR_EL1, outside the listed differences (the CPU's NS and SCTLR_ELx.C reporting, its
    own IMPLEMENTATION DEFINED choices)."""
    fast = 0
    fs = qemu_7_2_max()
    for obj in generate_nested_cases(60, 5, FAMILIES):
        at_case = atcase.parse_case(obj)
        case = parse_case(obj, 0)
        for index, spec in enumerate(at_case.ops):
            if spec.op.stage != 1:
                continue
            m = l1_machine(at_case, fs)
            l2_touch(m, spec.va)
            got = kvm_at(m.context(CURRENT), m.regs, spec.pan, spec.op, spec.va)
            if got.path != "fast":
                continue
            fast += 1
            ctx = m.context(CURRENT)
            slow = slow_par(ctx, handle_at_slow(ctx, m.regs, spec.pan, spec.op, spec.va))
            if slow != got.par:
                ev = nested_evidence(case, index, {}, slow, got.par, fs)
                assert explain_kvm(ev) is not None, (case.name, index, hex(got.par), hex(slow))
    assert fast > 200


def test_an_unlisted_difference_is_a_mismatch() -> None:
    obj = generate_nested_cases(1, 3, ["s1_4k"])[0]
    case = parse_case(obj, 0)
    kvm = nested_answer(obj)["ops"][0]
    arch = model_answer(obj)["ops"][0]
    wrong = {**kvm, "PAR_EL1": f"{int(kvm['PAR_EL1'], 16) ^ 1 << 20:#x}"}
    fs = qemu_7_2_max()
    assert compare_nested_op(case, 0, arch, wrong, arch, fs).verdict == MISMATCH
    assert compare_nested_op(case, 0, arch, kvm, arch, fs).verdict in (AGREE, DIVERGENCE)


def test_each_normaliser_names_a_listed_difference() -> None:
    for name, _ in KVM_NORMALISERS:
        assert name in BY_NAME or name == "S12_ATTRIBUTES"


def test_ops_not_at_el2_are_dropped_and_a_case_without_any_is_none() -> None:
    obj = {"name": "x", "ops": [{"op": "S1E1R", "va": "0x1000", "el": "EL1"},
                                {"op": "S1E2R", "va": "0x2000"}]}
    kept = el2_case(obj)
    assert kept is not None and [op["op"] for op in kept["ops"]] == ["S1E2R"]
    assert el2_case({"name": "y", "el": "EL1", "ops": [["S1E1R", "0x1000"]]}) is None


def test_l1_memory_sits_behind_kvms_offset_stage2_and_updates_are_reported_at_guest_pas(
) -> None:
    # L1's EL2 stage 1 (4KB, 48-bit) at guest PA 0x40000000 with HA: AT S1E2R sets AF.
    l0, l1, l2, l3 = 0x4000_0000, 0x4000_1000, 0x4000_2000, 0x4000_3000
    obj = {"name": "af", "regs": {"SCTLR_EL2": "0x30c50835", "TCR_EL2": "0x80a03510",
                                  "MAIR_EL2": "0xff", "TTBR0_EL2": hex(l0)},
           "memory": [{"pa": hex(l0), "words": [hex(l1 | 3)]},
                      {"pa": hex(l1), "words": [hex(l2 | 3)]},
                      {"pa": hex(l2), "words": [hex(l3 | 3)]},
                      {"pa": hex(l3 + 8), "words": ["0x50000303"]}],
           "ops": [["S1E2R", "0x1000"]]}
    answer = nested_answer(obj)
    (change,) = answer["memory_changes"]
    assert int(change["pa"], 16) == l3 + 8 and int(change["after"], 16) == 0x50000703
    assert int(answer["ops"][0]["PAR_EL1"], 16) & 0xFFFFFFFFF000 == 0x5000_0000
    m = l1_machine(atcase.parse_case(obj), qemu_7_2_max())
    assert m.vm.host.read64(l3 + 8 + HOST_OFFSET) == 0x50000303


# --- The command ---------------------------------------------------------------------------


def test_through_nested_refuses_keep_mismatches(tmp_path: Any) -> None:
    result = CliRunner().invoke(conformance, ["--through", "nested", "--keep-mismatches",
                                              str(tmp_path / "m"), "--cases", "1"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("s2mmu: error: --keep-mismatches: not available with "
                                    "--through nested")
    assert not (tmp_path / "m").exists()


def test_through_nested_refuses_a_file_without_el2_ops(tmp_path: Any) -> None:
    path = tmp_path / "el1.json"
    path.write_text(json.dumps({"name": "el1", "el": "EL1", "ops": [["S1E1R", "0x1000"]]}))
    result = CliRunner().invoke(conformance, ["--through", "nested", "--replay", str(path)])
    assert result.exit_code == 2
    assert result.stderr == ("s2mmu: error: --through nested: no op of the file executes at "
                             "EL2 (a guest hypervisor's AT instructions run at virtual EL2)\n")


@requires_qemu
def test_through_nested_json_reports_paths_and_validates() -> None:
    result = CliRunner().invoke(conformance, ["--through", "nested", "--cases", "6",
                                              "--family", "stage2,el2", "--json"])
    assert result.exit_code == 0, result.stdout
    doc = json.loads(result.stdout)
    validate(doc)
    assert doc["run"]["through"] == "nested" and doc["nested"]["profile"] == "current"
    assert doc["nested"]["fast"] + doc["nested"]["slow"] == doc["total"]["ops"]
    assert doc["ok"] and doc["total"]["mismatch"] == 0


@requires_qemu
def test_through_nested_text_ends_with_the_paths() -> None:
    result = CliRunner().invoke(conformance, ["--through", "nested", "--cases", "3",
                                              "--family", "perms", "--profile", "v6.12"])
    assert result.exit_code == 0, result.stdout
    last = result.stdout.splitlines()[-1]
    assert last.startswith("through KVM's AT emulation (profile v6.12): ")
