"""The nested AT emulation's software walk against the kernel's own at.c (6.12)."""

from __future__ import annotations

from pathlib import Path

from s2mmu.cli.schemas import validate
from s2mmu.kernel.at_binding import GLUE_OPS, KernelAt
from s2mmu.kernel.at_diff import (
    AT_6_12_DIFFERENCES,
    FEATURE_QUESTIONS,
    compare_case,
    kernel_par,
    model_par,
    random_case,
    run_at_diff,
)
from s2mmu.kernel.build import KernelBuild
from s2mmu.nested.at import AT_CHOICES


def test_every_difference_on_random_guests_is_a_listed_one(kernel_at: KernelAt) -> None:
    report = run_at_diff(kernel_at, cases=80, seed=3)
    assert report.compared == 80
    assert [(d.index, d.kernel, d.model, d.case) for d in report.unexplained] == []
    assert set(report.explained) <= {d.name for d in AT_6_12_DIFFERENCES}
    assert report.agreed >= 50
    assert len(report.by_op) >= 10
    assert kernel_at.errors == []


def test_the_kernel_encodes_every_at_instruction_distinctly(kernel_at: KernelAt) -> None:
    assert len(set(kernel_at.encodings.values())) == len(GLUE_OPS)


def test_contiguous_output_bits_come_from_the_va_as_in_walk_s1(kernel_at: KernelAt) -> None:
    # Seed 0, case 236: a contiguous level-3 leaf; 6.12 takes PA[15:12] from the VA.
    assert AT_CHOICES.contiguous_oa_from_ia
    case = random_case(0, 236)
    kpar = kernel_par(kernel_at, case)
    assert (kpar >> 12) & 0xF == (case.va >> 12) & 0xF != 0
    assert model_par(case) == kpar


def test_6_12_never_checks_the_access_flag(kernel_at: KernelAt) -> None:
    for i in range(400):
        d = compare_case(kernel_at, random_case(0, i))
        if d is not None and d.explained == "AT612_NO_AF_CHECK":
            assert (int(d.model, 16) >> 1) & 0b111100 == 0b001000   # the model: AF fault
            assert (int(d.kernel, 16) >> 1) & 0b111100 != 0b001000
            return
    raise AssertionError("no AF=0 leaf in 400 cases")


def test_every_feature_question_names_a_model_feature() -> None:
    assert all(name.startswith("FEAT_") for name in FEATURE_QUESTIONS.values())


def test_the_at_diff_json_document_validates(kernel_build: KernelBuild, kernel_at: KernelAt,
                                              tmp_path: Path) -> None:
    from s2mmu.cli.kernel_cmd import at_diff_doc
    doc = at_diff_doc(kernel_build, run_at_diff(kernel_at, cases=12, seed=1))
    validate(doc)
    assert doc["compared"] == 12 and doc["unexplained"] == 0
