"""The nested AT emulation's software walk against the kernel's own at.c (6.12)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from s2mmu.cli.kernel_cmd import at_diff_doc
from s2mmu.cli.schemas import validate
from s2mmu.kernel.at_binding import GLUE_OPS, KernelAt
from s2mmu.kernel.at_diff import (
    FEATURE_QUESTIONS,
    compare_case,
    kernel_par,
    model_par,
    random_case,
    run_at_diff,
)
from s2mmu.kernel.build import KernelBuild
from s2mmu.nested import at
from s2mmu.nested.at import AT_CHOICES, CURRENT, V6_12


def test_the_v6_12_profile_agrees_with_6_12_on_random_guests(kernel_at: KernelAt) -> None:
    report = run_at_diff(kernel_at, cases=120, seed=3)
    assert [(d.index, d.kernel, d.model, d.case) for d in report.differences] == []
    assert report.compared == report.agreed == 120
    assert len(report.by_op) == len(GLUE_OPS)
    assert kernel_at.errors == []


def test_the_kernel_encodes_every_at_instruction_distinctly(kernel_at: KernelAt) -> None:
    assert len(set(kernel_at.encodings.values())) == len(GLUE_OPS)


def test_contiguous_output_bits_come_from_the_va_as_in_walk_s1(
        kernel_at: KernelAt, monkeypatch: pytest.MonkeyPatch) -> None:
    # Seed 0, case 40: a contiguous leaf; 6.12 takes the run's low output bits from the VA.
    assert AT_CHOICES.contiguous_oa_from_ia
    case = random_case(0, 40)
    kpar = kernel_par(kernel_at, case)
    assert model_par(case) == kpar and not kpar & 1
    monkeypatch.setattr(at, "AT_CHOICES", replace(AT_CHOICES, contiguous_oa_from_ia=False))
    assert model_par(random_case(0, 40)) != kpar


def test_blocks_only_at_the_levels_walk_s1_accepts(kernel_at: KernelAt,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Seed 0, case 1011: a 64KB block at level 1 in a 52-bit-PA VM (AT_S1_BLOCK_LEVELS).
    case = random_case(0, 1011)
    assert kernel_par(kernel_at, case) == 0x90B == model_par(case)   # Translation L1, PTW
    monkeypatch.setattr(at, "kvm_block_level_refused", lambda granule, last: False)
    assert model_par(random_case(0, 1011)) == 0x81B                  # the architecture's


# (knob, the value current kernels have, a seed-0 case that shows it, the kernel's PAR)
KNOBS = [
    ("s1_af_checked", True, 5, 0x81B),                    # AF=0: the permission fault
    ("ptw_on_s1_walk_fault", False, 3, 0x907),            # Translation L3 with PTW=1
    ("s12_needs_e2h", False, 15, 0xFF0007F50AC30800),     # E2H=0: stage-1 result only
    ("fwb_device_nGnRnE", False, 2201, 0x280160100),      # FWB Device: nGnRnE
]


@pytest.mark.parametrize(("knob", "fixed", "index", "kernel"), KNOBS)
def test_each_6_12_knob_is_what_makes_the_model_agree(kernel_at: KernelAt, knob: str,
                                                     fixed: bool, index: int,
                                                     kernel: int) -> None:
    case = random_case(0, index)
    assert kernel_par(kernel_at, case) == kernel
    assert compare_case(kernel_at, case, V6_12) is None
    d = compare_case(kernel_at, case, replace(V6_12, **{knob: fixed}))
    assert d is not None and d.kernel == f"{kernel:#x}"
    assert getattr(CURRENT, knob) is fixed


def test_every_feature_question_names_a_model_feature() -> None:
    assert all(name.startswith("FEAT_") for name in FEATURE_QUESTIONS.values())


def test_the_at_diff_json_document_validates(kernel_build: KernelBuild,
                                             kernel_at: KernelAt) -> None:
    doc = at_diff_doc(kernel_build, run_at_diff(kernel_at, cases=12, seed=1))
    validate(doc)
    assert doc["compared"] == doc["agreed"] == 12 and doc["differences"] == []
    doc = at_diff_doc(kernel_build, run_at_diff(kernel_at, cases=1, seed=0, only=15,
                                                profile=CURRENT))
    validate(doc)
    assert doc["differences"][0]["case"] == 15 and doc["profile"] == "current"


def test_par_keeps_pa_47_12_only_as_compute_par_s1_does(kernel_at: KernelAt) -> None:
    # Seed 0, case 2808: a 52-bit-PA VM, an output above 2^48 (AT_PAR_PA_48BIT).
    case = random_case(0, 2808)
    kpar = kernel_par(kernel_at, case)
    assert not kpar & 1 and (case.va >> 48) & 0xF and not (kpar >> 48) & 0xF
    assert model_par(case) == kpar
