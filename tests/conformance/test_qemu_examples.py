"""The probe reproduces QEMU 7.2's recorded answers to the shared example cases, bit for bit."""

from __future__ import annotations

from s2mmu.conformance.qemu import QemuConfig, run_case_file
from tests.conformance.conftest import load, requires_qemu


@requires_qemu
def test_probe_reproduces_validation_answers_bit_for_bit(qemu_config: QemuConfig) -> None:
    assert run_case_file(load("validation.cases.json"), qemu_config) == load("validation.qemu.json")


@requires_qemu
def test_examples_give_the_same_answers_from_el3(qemu_config: QemuConfig) -> None:
    cases = load("validation.cases.json")["cases"]
    moved = [dict(case, el="EL3") for case in cases]
    want = load("validation.qemu.json")["cases"]
    got = run_case_file(moved, qemu_config)["cases"]
    for g, w in zip(got, want, strict=True):
        assert [op["PAR_EL1"] for op in g["ops"]] == [op["PAR_EL1"] for op in w["ops"]]


@requires_qemu
def test_probe_reproduces_the_exclusives_and_atomics_answers(qemu_config: QemuConfig) -> None:
    assert run_case_file(load("atomics.cases.json"), qemu_config) == load("atomics.qemu.json")
