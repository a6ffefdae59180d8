"""A stage-2 leaf's PA relation to the VMM's memory, from pagemap records or the model."""

from __future__ import annotations

from pathlib import Path

from s2mmu.real.backing import (
    PAGE,
    PMD,
    Backing,
    HostPage,
    PaRelation,
    real_pages,
    relation,
)
from s2mmu.real.diff import Aspect, compare_backing, profile_for_release, run_model
from s2mmu.real.log import PagemapRun, parse_console
from s2mmu.real.plan import make_plan
from s2mmu.scenario.schema import load_scenario

DATA = Path(__file__).resolve().parents[2] / "src" / "s2mmu" / "real" / "data"
SLOT = 0x7F0000000000


def hva_of(ipa: int) -> int | None:
    return SLOT + ipa - 0x40000000 if 0x40000000 <= ipa < 0x40400000 else None


THP = 1 << 22
HUGE = 1 << 17
ZERO = 1 << 24


def test_pagemap_runs_become_pages_with_their_folio() -> None:
    pages = real_pages([PagemapRun(SLOT, 512, 0x48000, THP), PagemapRun(SLOT + PMD, 1, 0x777,
                                                                        ZERO)])
    assert pages[SLOT + 5 * PAGE] == HostPage(0x48005000, PMD, False)
    assert pages[SLOT + PMD] == HostPage(0x777000, PAGE, True)
    assert real_pages([PagemapRun(SLOT, 1, 1, HUGE)])[SLOT].folio == PMD


def test_relations() -> None:
    pages = real_pages([PagemapRun(SLOT, 512, 0x48000, THP), PagemapRun(SLOT + PMD, 1, 0x777,
                                                                        ZERO)])
    assert relation(0x40000000, PMD, 0x48000000, hva_of, pages) == PaRelation(
        Backing.HVA, PMD, 0, True)
    assert relation(0x40005000, PAGE, 0x48005000, hva_of, pages) == PaRelation(
        Backing.HVA, PMD, 0x5000, True)
    assert relation(0x40200000, PAGE, 0x777000, hva_of, pages).backing is Backing.ZERO
    assert relation(0x40005000, PAGE, 0x48006000, hva_of, pages).backing is Backing.OTHER
    assert relation(0x40300000, PAGE, 0x48006000, hva_of, pages).backing is Backing.ABSENT
    broken = {**pages, SLOT + 7 * PAGE: HostPage(0x1000, PAGE, False)}
    assert not relation(0x40000000, PMD, 0x48000000, hva_of, broken).contiguous
    assert str(relation(0x40005000, PAGE, 0x48005000, hva_of, pages)) == \
        "hva +0x5000 in a 2048K folio"


def test_the_console_s_pagemap_records_are_kept_by_step() -> None:
    log = parse_console("S2R boot 6.1.0-57-arm64\nS2R plan 000-x.plan\nS2R begin x\n"
                        "S2R dump 6 pagemap 0x7f0000000000 512 0x48000 0x400000\n"
                        "S2R dump 6 pagemap 0x7f0000200000 1 0x777 0x1000000\n"
                        "S2R dump 6 ready\nS2R end\n")
    assert log.runs[0].pagemaps == {6: (PagemapRun(SLOT, 512, 0x48000, THP),
                                        PagemapRun(SLOT + PMD, 1, 0x777, ZERO))}


def model_after(name: str, step: int):  # type: ignore[no-untyped-def]
    scn = load_scenario(DATA / name)
    pages: dict[int, dict[int, HostPage]] = {}
    _, dumps = run_model(scn, profile_for_release("6.1.0"), (step,), pages)
    return make_plan(scn), dumps[step], pages[step]


def test_the_model_s_pages_know_its_thp() -> None:
    plan, dump, pages = model_after("thp_split.toml", 6)
    found, rels = compare_backing(6, dump, dump, plan, pages, pages)
    assert found == []
    assert [(v.ipa, str(r)) for v, r in rels] == [
        (0x40005000, "hva +0x5000 in a 2048K folio"),
        (0x40007000, "hva +0x7000 in a 2048K folio")]


def test_a_different_folio_is_a_difference() -> None:
    plan, dump, pages = model_after("thp_split.toml", 6)
    real = {h: HostPage(p.pa, PAGE, p.zero) for h, p in pages.items()}
    found, _ = compare_backing(6, dump, dump, plan, pages, real)
    assert [(d.step, d.aspect, d.model, d.real) for d in found] == [
        (6, Aspect.BACKING, "0x40005000 hva +0x5000 in a 2048K folio",
         "0x40005000 hva +0x0 in a 4K folio"),
        (6, Aspect.BACKING, "0x40007000 hva +0x7000 in a 2048K folio",
         "0x40007000 hva +0x0 in a 4K folio")]


def test_the_model_s_zero_page_is_its_own() -> None:
    plan, dump, pages = model_after("dirty_round.toml", 5)
    _, rels = compare_backing(5, dump, dump, plan, pages, pages)
    assert [r.backing for _, r in rels] == [Backing.HVA, Backing.ZERO, Backing.ZERO]
