"""The library's explanation of a translation: typed lines, notes, the syndrome, and that
it is whole for every register state."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s2mmu.arch.access import acc_gpr, acc_ifetch
from s2mmu.arch.at import AtOp, execute_at
from s2mmu.arch.explain import (
    LineKind,
    attribute_notes,
    explain_at_lines,
    explain_lines,
    explain_text,
    register_notes,
    trace_translation,
)
from s2mmu.arch.features import qemu_7_2_max
from s2mmu.arch.memory import PhysMem
from s2mmu.arch.state import Regime, SysRegs, regime_for
from s2mmu.arch.translate import Env
from tests.arch.machine import SCTLR_M, tcr_el1

S1_TABLES = [(0x1000, 0x2003), (0x2000, 0x3003), (0x3000, 0x4003), (0x4000, 0x5000 | 0x403)]


def s1_machine() -> tuple[SysRegs, Env]:
    mem = PhysMem()
    for pa, desc in S1_TABLES:
        mem.write64(pa, desc)
    regs = SysRegs(SCTLR_EL1=SCTLR_M, TCR_EL1=tcr_el1(), MAIR_EL1=0xFF, TTBR0_EL1=0x1000)
    return regs, Env(mem, qemu_7_2_max())


def test_sl0_that_does_not_fit_t0sz_is_named_and_the_fault_shown_whole() -> None:
    # Issue 8: HCR_EL2.VM=1, VTCR_EL2=0xa0 (T0SZ=32, SL0=0b10) crashed the renderer.
    regs = SysRegs(HCR_EL2=0x80000001, VTCR_EL2=0xA0)
    run = trace_translation(regs, Regime.EL10, 0x1000, acc_gpr(1, False),
                            Env(PhysMem(), qemu_7_2_max()), given={"HCR_EL2", "VTCR_EL2"})
    text = explain_text(run)
    assert ("stage 2: VTTBR_EL2, 4KB granule, T0SZ=32, SL0=0b10: SL0 does not fit T0SZ (an "
            "IPA of 32 bits cannot start at level 0 (40..52 bits)): no walk") in text
    assert text.splitlines()[-2:] == [
        "FAULT stage 2: Translation fault, level 0 (FSC 0x04) IPA=0x1000: VTCR_EL2.SL0: an "
        "IPA of 32 bits cannot start at level 0 (40..52 bits)",
        "  taken to EL2: ESR_EL2=0x92000004 FAR_EL2=0x1000 HPFAR_EL2=0x10"]


def test_registers_not_given_are_named_with_their_default() -> None:
    run = trace_translation(SysRegs(), Regime.EL10, 0x1000, acc_gpr(1, False),
                            Env(PhysMem(), qemu_7_2_max()), given=set())
    assert register_notes(run) == ["SCTLR_EL1 not given: 0x30d00800 (M=0), stage 1 off",
                                   "HCR_EL2 not given: 0x80000000 (VM=0), stage 2 off"]


def test_registers_given_as_a_sysregs_get_no_note() -> None:
    run = trace_translation(SysRegs(), Regime.EL10, 0x1000, acc_gpr(1, False),
                            Env(PhysMem(), qemu_7_2_max()))
    assert register_notes(run) == []


def test_el2_regime_notes_sctlr_el2() -> None:
    run = trace_translation(SysRegs(), Regime.EL2, 0x1000, acc_gpr(2, False),
                            Env(PhysMem(), qemu_7_2_max()), given=set())
    assert register_notes(run) == ["SCTLR_EL2 not given: 0x30c50830 (M=0), stage 1 off"]


def test_sctlr_c_0_is_named_as_what_changed_the_attributes() -> None:
    regs, env = s1_machine()
    run = trace_translation(SysRegs(**{**regs.to_mapping(), "SCTLR_EL1": 0x30D00801}),
                            Regime.EL10, 0x0, acc_gpr(1, False), env)
    assert attribute_notes(run) == ["SCTLR_EL1.C=0 changed the stage-1 attributes: Normal "
                                    "iWB-RAWA oWB-RAWA NSH -> Normal iNC oNC OSH"]


def test_sctlr_i_0_is_named_for_a_fetch() -> None:
    regs, env = s1_machine()
    regs = SysRegs(**{**regs.to_mapping(), "SCTLR_EL1": 0x30D00805})  # M, C, not I
    run = trace_translation(regs, Regime.EL10, 0x0, acc_ifetch(1), env)
    assert attribute_notes(run) == ["SCTLR_EL1.I=0 changed the stage-1 attributes: Normal "
                                    "iWB-RAWA oWB-RAWA NSH -> Normal iNC oNC OSH"]


def test_no_note_when_the_controls_change_nothing() -> None:
    regs, env = s1_machine()
    run = trace_translation(regs, Regime.EL10, 0x0, acc_gpr(1, False), env)
    assert attribute_notes(run) == []


def s2_machine(hcr: int) -> tuple[SysRegs, Env]:
    """Stage 1 off (SCTLR_EL1.C=1), a stage 2 mapping IPA 0 to PA 0x80000000 Normal WB."""
    from s2mmu.arch.builder import BumpAllocator, TableBuilder, s2_attrs
    from s2mmu.arch.params import Granule
    from s2mmu.arch.registers import VTCR_EL2

    mem = PhysMem()
    s2 = TableBuilder(mem, BumpAllocator(0x10000, 0x20000), Granule.G4K, iasize=40,
                      startlevel=1)
    s2.map(0x0, 0x8000_0000, 0x1000, s2_attrs())
    regs = SysRegs(HCR_EL2=hcr, VTCR_EL2=VTCR_EL2.encode(T0SZ=24, SL0=1, PS=2),
                   VTTBR_EL2=s2.root, SCTLR_EL1=0x30D00804)
    return regs, Env(mem, qemu_7_2_max())


def test_hcr_dc_with_stage_1_off_is_named() -> None:
    regs, env = s2_machine(0x80001000)  # DC (stage 2 on)
    run = trace_translation(regs, Regime.EL10, 0x0, acc_gpr(1, False), env)
    assert attribute_notes(run) == ["HCR_EL2.DC=1: with stage 1 off, accesses are Normal "
                                    "Write-Back Non-shareable (not Device-nGnRnE)"]


def test_hcr_cd_is_named_as_what_changed_the_stage_2_attributes() -> None:
    regs, env = s2_machine(0x80001001 | (1 << 32))  # VM, DC, CD
    run = trace_translation(regs, Regime.EL10, 0x0, acc_gpr(1, False), env)
    assert attribute_notes(run)[1:] == ["HCR_EL2.CD=1 changed the stage-2 attributes: Normal "
                                        "iWB-RAWA oWB-RAWA ISH -> Normal iNC oNC OSH"]


def test_no_stage_2_note_without_cd() -> None:
    regs, env = s2_machine(0x80001001)
    run = trace_translation(regs, Regime.EL10, 0x0, acc_gpr(1, False), env)
    assert len(attribute_notes(run)) == 1


def test_lines_are_typed_and_indented() -> None:
    regs, env = s1_machine()
    lines = explain_lines(trace_translation(regs, Regime.EL10, 0x0, acc_gpr(1, True), env))
    kinds = [x.kind for x in lines]
    assert kinds[0] is LineKind.INPUT and kinds[-1] is LineKind.RESULT
    assert kinds.count(LineKind.DESCRIPTOR) == 4 and LineKind.PARAMS in kinds
    assert lines[-1].render() == "-> 0x5000  Normal iWB-RAWA oWB-RAWA NSH"


def test_without_walk_only_head_notes_result() -> None:
    regs, env = s1_machine()
    run = trace_translation(regs, Regime.EL10, 0x0, acc_gpr(1, False), env)
    assert explain_text(run, walk=False) == (
        "VA 0x0 EL1 read in the EL1&0 regime\n-> 0x5000  Normal iWB-RAWA oWB-RAWA NSH")


def test_fault_gives_the_syndrome_line_taken_to_el1() -> None:
    regs, env = s1_machine()
    run = trace_translation(regs, Regime.EL10, 0x1000, acc_gpr(1, False), env)
    assert run.abort is not None and run.abort.taken_to == 1
    assert explain_text(run).splitlines()[-1] == \
        "  taken to EL1: ESR_EL1=0x96000007 FAR_EL1=0x1000"


def test_hardware_writes_of_this_run_only_are_recorded() -> None:
    regs, env = s1_machine()
    env.mem.write64(0x4000, 0x5003)   # AF=0
    regs = SysRegs(**{**regs.to_mapping(), "TCR_EL1": tcr_el1(HA=1)})
    first = trace_translation(regs, Regime.EL10, 0x0, acc_gpr(1, False), env)
    again = trace_translation(regs, Regime.EL10, 0x0, acc_gpr(1, False), env)
    assert [(w.pa, w.before, w.after) for w in first.writes] == [(0x4000, 0x5003, 0x5403)]
    assert again.writes == ()
    assert "  hardware wrote PA 0x4000: 0x5003 -> 0x5403" in explain_text(first)


def test_at_explanation_ends_with_par() -> None:
    regs, env = s1_machine()
    run = trace_translation(regs, Regime.EL10, 0x0, acc_gpr(1, False), env)
    result = execute_at(AtOp.S1E1R, 0x0, 2, False, regs, env)
    lines = explain_at_lines(AtOp.S1E1R, 0x0, 2, False, run, result)
    assert lines[0].render() == "AT S1E1R 0x0 at EL2 PAN=0"
    assert lines[-1].render().startswith("PAR_EL1=0xff00000000005a00")


# ---------------------------------------------------------------- any register state

U64 = st.integers(0, (1 << 64) - 1)


def descriptor() -> st.SearchStrategy[int]:
    """A descriptor pointing into the small table area: random bits, or a valid table or
    leaf with AF set and random attributes."""
    any_bits = st.builds(lambda page, low, high: (page << 12) | low | (high << 48),
                         st.integers(1, 8), st.integers(0, 0xFFF), st.integers(0, 0xFFFF))
    valid = st.builds(lambda page, kind, attrs, high: (page << 12) | kind | 0x400
                      | (attrs << 2) | (high << 51),
                      st.integers(1, 8), st.sampled_from([0b01, 0b11]), st.integers(0, 0xFF),
                      st.integers(0, 0x1FFF))
    return st.one_of(any_bits, valid)


def walkable_tcr() -> st.SearchStrategy[int]:
    """A TCR_ELx with defined granules and TxSZ in range, random other fields."""
    return st.builds(lambda t0, t1, tg0, tg1, ips, ha, noise: (
        t0 | (tg0 << 14) | (t1 << 16) | (tg1 << 30) | (ips << 32) | (ha << 39)
        | (noise & 0x0000_0040_3F80_3F80)),
        st.integers(16, 39), st.integers(16, 39), st.sampled_from([0, 1, 2]),
        st.sampled_from([1, 2, 3]), st.integers(0, 5), st.integers(0, 1), U64)


def walkable_vtcr() -> st.SearchStrategy[int]:
    """A VTCR_EL2 with a defined granule, T0SZ and SL0 often consistent."""
    return st.builds(lambda t0, sl0, tg0, ps, ha: (
        (1 << 31) | t0 | (sl0 << 6) | (0b1111 << 8) | (0b11 << 12) | (tg0 << 14) | (ps << 16)
        | (ha << 21)),
        st.integers(16, 40), st.integers(0, 2), st.sampled_from([0, 1, 2]),
        st.integers(0, 5), st.integers(0, 1))


@st.composite
def machine(draw: st.DrawFn) -> tuple[SysRegs, Env, int, int]:
    mem = PhysMem()
    for page in range(1, 9):   # each table page: one descriptor in every entry
        mem.write_bytes(page << 12, draw(descriptor()).to_bytes(8, "little") * 512)
    sctlr = draw(st.one_of(U64, st.just(SCTLR_M), st.just(SCTLR_M)))
    regs = SysRegs(
        SCTLR_EL1=sctlr, SCTLR_EL2=draw(st.one_of(U64, st.just(SCTLR_M))),
        TCR_EL1=draw(st.one_of(U64, walkable_tcr())),
        TCR_EL2=draw(st.one_of(U64, walkable_tcr())),
        VTCR_EL2=draw(st.one_of(U64, walkable_vtcr())),
        HCR_EL2=draw(st.one_of(U64, st.sampled_from(
            [0x80000000, 0x80000001, 0x80001000, 0x480000000]))),
        MAIR_EL1=draw(U64), MAIR_EL2=draw(U64),
        TTBR0_EL1=draw(st.integers(1, 8)) << 12, TTBR1_EL1=draw(st.integers(1, 8)) << 12,
        TTBR0_EL2=draw(st.integers(1, 8)) << 12, VTTBR_EL2=draw(st.integers(1, 8)) << 12)
    return regs, Env(mem, qemu_7_2_max()), draw(st.integers(0, 2)), draw(
        st.one_of(U64, st.integers(0, 1 << 20), st.integers(0, 0xFFFF).map(lambda x: x << 48)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(machine(), st.booleans(), st.sampled_from(["r", "w", "x"]))
def test_explanation_is_whole_for_any_register_state(m: tuple[SysRegs, Env, int, int],
                                                     stage1_only: bool, kind: str) -> None:
    regs, env, el, va = m
    acc = acc_ifetch(el) if kind == "x" else acc_gpr(el, kind == "w")
    run = trace_translation(regs, regime_for(el, regs), va, acc, env, stage1_only=stage1_only)
    lines = explain_lines(run)
    assert lines[-1 - len(run.writes)].kind in (LineKind.RESULT, LineKind.SYNDROME)
    assert explain_text(run).count("\n") == len(lines) - 1


def test_explain_shows_the_pie_index_and_overlay_of_the_leaf():
    from s2mmu.arch.access import acc_gpr as _acc
    from s2mmu.arch.builder import s1_attrs as _attrs
    from s2mmu.arch.explain import explain_text, trace_translation
    from s2mmu.arch.features import server_v9_4_pie
    from s2mmu.arch.registers import HCRX_EL2

    from .machine import s1_machine as _s1
    m, b = _s1(fs=server_v9_4_pie())
    b.map(0x40_0000, 0x8000_0000, 0x1000, _attrs() | 2 << 60)
    m.set(TCR2_EL1=0b1010, HCRX_EL2=HCRX_EL2.encode(TCR2En=1), PIR_EL1=0x5, POR_EL1=0x1 << 8)
    text = explain_text(trace_translation(m.regs, Regime.EL10, 0x40_0000, _acc(1, True),
                                          m.env()))
    assert "PIE=1 POE=1" in text
    assert "PIE: PIIndex=0b0000: PIR Perm0=0b0101, PIRE0 Perm0=0b0000" in text
    assert "overlay: POIndex=2: privileged R--" in text
