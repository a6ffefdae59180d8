"""The batch engine answers exactly as the scalar path, lane by lane, in program order."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2mmu.arch.access import acc_gpr, acc_ifetch
from s2mmu.arch.at import AtOp, encode_par
from s2mmu.arch.atcase import (
    memory_change_json,
    op_result_json,
    parse_case,
    run_case,
    run_case_detailed,
)
from s2mmu.arch.batch import FAULTS, at_batch, translate_batch
from s2mmu.arch.builder import BumpAllocator, TableBuilder, s1_attrs, s2_attrs
from s2mmu.arch.errors import InputError
from s2mmu.arch.faults import FaultRecord
from s2mmu.arch.features import qemu_7_2_max, qemu_7_2_max_xs
from s2mmu.arch.memory import PhysMem
from s2mmu.arch.params import Granule
from s2mmu.arch.registers import TCR_EL1, VTCR_EL2
from s2mmu.arch.state import Regime, SysRegs
from s2mmu.arch.translate import Env, full_translate
from s2mmu.conformance.generator import FAMILIES, generate_case


def neighbours(va: int, rng: random.Random) -> list[int]:
    """Addresses around va that share some of its walk and leave it at every level."""
    out = [va, va + 8, va ^ 0x1000, va + 0x20_0000, va & ~0xFFF, va ^ (1 << 30),
           (va & ~((1 << 30) - 1)) | rng.randrange(1 << 30), rng.randrange(1 << 64),
           va ^ (1 << 55), va ^ (1 << 63), va + 0x1000, va ^ (1 << 39)]
    return [v & ((1 << 64) - 1) for v in out]


def widened(case: dict, rng: random.Random) -> dict:
    """Return case with each op turned into a run of ops at its neighbours."""
    parsed = parse_case(case)
    ops = tuple(replace(o, va=v) for o in parsed.ops
                for v in (neighbours(o.va, rng) if isinstance(o.op, AtOp) else [o.va]))
    return replace(parsed, ops=ops)


def scalar_json(case, features=None) -> dict:
    results, mem, writers = run_case_detailed(case, features)
    return {"name": case.name,
            "ops": [op_result_json(s, r) for s, r in zip(case.ops, results, strict=True)],
            "memory_changes": [memory_change_json(w, i)
                               for w, i in zip(mem.hw_writes, writers, strict=True)]}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_batch_equals_scalar_on_every_conformance_family(family: str) -> None:
    rng = random.Random(family)
    for index in range(6):
        case = widened(generate_case(family, 11, index), rng)
        assert run_case(case) == scalar_json(case), case.name


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(FAMILIES)), st.integers(0, 10_000))
def test_batch_equals_scalar_on_random_cases(family: str, seed: int) -> None:
    case = widened(generate_case(family, seed, seed % 7), random.Random(seed))
    assert run_case(case) == scalar_json(case)


def _two_stage(ha: bool = False) -> tuple[SysRegs, PhysMem]:
    mem = PhysMem()
    s1 = TableBuilder(mem, BumpAllocator(0x4000_0000, 0x4100_0000), Granule.G4K, 48, 0)
    s1.map(0x8000_0000, 0x9000_0000, 64 * 4096, s1_attrs())
    s1.map(0xA000_0000, 0xB000_0000, 2 << 20, s1_attrs(), level=2)
    s2 = TableBuilder(mem, BumpAllocator(0x5000_0000, 0x5100_0000), Granule.G4K, 48, 0)
    for base in (0x4000_0000, 0x9000_0000):
        s2.map(base, base, 4 << 20, s2_attrs())
    tcr = TCR_EL1.encode(T0SZ=16, TG0=0, IPS=5, SH0=3, IRGN0=1, ORGN0=1, HA=int(ha))
    vtcr = VTCR_EL2.encode(T0SZ=16, SL0=2, TG0=0, PS=5, SH0=3, IRGN0=1, ORGN0=1)
    return SysRegs(SCTLR_EL1=0x30D00801, MAIR_EL1=0xFF, TTBR0_EL1=s1.root, TCR_EL1=tcr,
                   HCR_EL2=0x80000001, VTCR_EL2=vtcr, VTTBR_EL2=s2.root), mem


def _lanes_agree(regs: SysRegs, vas: list[int], access, make_mem) -> None:
    env_b = Env(make_mem(), qemu_7_2_max())
    env_s = Env(make_mem(), qemu_7_2_max())
    got = translate_batch(regs, Regime.EL10, vas, access, env_b)
    for i, va in enumerate(vas):
        want = full_translate(regs, Regime.EL10, va, access, env_s)
        assert int(got.par[i]) == encode_par(want, env_s), hex(va)
        if isinstance(want, FaultRecord):
            assert FAULTS[int(got.fault[i])] is want.statuscode
            assert (int(got.level[i]), bool(got.secondstage[i]), bool(got.s2fs1walk[i])) == (
                want.level, want.secondstage, want.s2fs1walk)
            assert int(got.ipa[i]) == (want.ipaddress or 0)
        else:
            assert got.fault[i] == -1 and int(got.pa[i]) == want.paddress
            assert got.attr_table[int(got.attrs[i])] == want.memattrs
    assert env_b.mem.hw_writes == env_s.mem.hw_writes


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.integers(0x8000_0000 - 0x2000, 0x8000_0000 + 70 * 4096),
                          st.integers(0xA000_0000, 0xA020_0000),
                          st.integers(0, (1 << 64) - 1)), min_size=1, max_size=60),
       st.booleans(), st.booleans())
def test_two_stage_lanes_equal_scalar(vas: list[int], write: bool, fetch: bool) -> None:
    regs, mem = _two_stage()
    access = acc_ifetch(1) if fetch else acc_gpr(1, write)
    _lanes_agree(regs, vas, access, lambda: _two_stage()[1])


def test_updates_happen_in_program_order() -> None:
    # TCR_EL1.HA with AF=0 leaves: the first lane on each page sets AF, later ones see it.
    regs, _ = _two_stage(ha=True)

    def mem_af0() -> PhysMem:
        _, m = _two_stage(ha=True)
        return m
    vas = [0x8000_0000 + (i % 5) * 4096 for i in range(40)]
    _lanes_agree(regs, vas, acc_gpr(1, False), mem_af0)


def test_at_batch_matches_execute_at_with_stage2_exceptions() -> None:
    from s2mmu.arch.at import AtOp, execute_at
    regs, mem = _two_stage()
    env = Env(mem, qemu_7_2_max())
    vas = [0x8000_0000 + i * 4096 for i in range(0, 80, 3)] + [0xA000_0000 + 0x1234]
    got_batch = at_batch(AtOp.S12E1R, vas, 1, False, regs, env)
    pars, exc = got_batch.par, got_batch.exceptions
    for i, va in enumerate(vas):
        want = execute_at(AtOp.S12E1R, va, 1, False, regs, env)
        if exc[i] is None:
            assert int(pars[i]) == want.par  # type: ignore[union-attr]
        else:
            got = exc[i]
            assert (got.taken_to, got.esr, got.far, got.hpfar) == (  # type: ignore[union-attr]
                want.taken_to, want.esr, want.far, want.hpfar)  # type: ignore[union-attr]


def test_a_custom_table_port_makes_the_batch_scalar() -> None:
    regs, mem = _two_stage()
    env = Env(mem, qemu_7_2_max(), tables=mem)
    got = translate_batch(regs, Regime.EL10, [0x8000_0000, 0x8000_1000], acc_gpr(1, False), env)
    assert got.scalar_lanes == 2 and got.fault.tolist() == [-1, -1]


def test_batch_refuses_signed_arrays_and_wide_addresses() -> None:
    regs, mem = _two_stage()
    env = Env(mem, qemu_7_2_max())
    with pytest.raises(InputError, match="uint64"):
        translate_batch(regs, Regime.EL10, np.zeros(3, np.int64), acc_gpr(1, False), env)
    with pytest.raises(InputError, match="64 bits"):
        translate_batch(regs, Regime.EL10, [1 << 64], acc_gpr(1, False), env)


def test_output_addresses_beyond_the_output_size_fault_lane_by_lane() -> None:
    # IPS=0 (32 bits): two pages with the same attributes, one below 4GB and one above.
    mem = PhysMem()
    s1 = TableBuilder(mem, BumpAllocator(0x4000_0000, 0x4100_0000), Granule.G4K, 48, 0)
    s1.map(0x8000_0000, 0x9000_0000, 4096, s1_attrs())
    s1.map(0x8000_1000, 0x1_9000_0000, 4096, s1_attrs())
    regs = SysRegs(SCTLR_EL1=0x30D00801, MAIR_EL1=0xFF, TTBR0_EL1=s1.root,
                   TCR_EL1=TCR_EL1.encode(T0SZ=16, TG0=0, IPS=0, SH0=3, IRGN0=1, ORGN0=1))
    vas = [0x8000_0000, 0x8000_1000, 0x8000_0008, 0x8000_1008]
    got = translate_batch(regs, Regime.EL10, vas, acc_gpr(1, False), Env(mem, qemu_7_2_max()))
    assert [f if f < 0 else FAULTS[f].name for f in got.fault.tolist()] == [
        -1, "ADDRESS_SIZE", -1, "ADDRESS_SIZE"]
    _lanes_agree(regs, vas, acc_gpr(1, False), lambda: mem)


def test_permission_masks_are_the_leaves() -> None:
    from s2mmu.arch.perms import s1_direct_permissions
    regs, mem = _two_stage()
    env = Env(mem, qemu_7_2_max())
    got = translate_batch(regs, Regime.EL10, [0x8000_0000, 0x8000_0000 + 64 * 4096],
                          acc_gpr(1, False), env)
    want = full_translate(regs, Regime.EL10, 0x8000_0000, acc_gpr(1, False), env)
    assert not isinstance(want, FaultRecord) and want.s1 is not None
    from s2mmu.arch.params import get_s1_ttw_params
    p = s1_direct_permissions(want.s1, get_s1_ttw_params(regs, Regime.EL10, 0x8000_0000,
                                                         env.fs, env.choices))
    assert int(got.s1_perms[0]) == (p.pr | p.pw << 1 | p.px << 2 | p.ur << 3 | p.uw << 4
                                    | p.ux << 5)
    assert int(got.s2_perms[0]) & 0b11 == 0b11      # s2_attrs(): read and write
    assert got.s1_perms[1] == 0 and got.fault[1] >= 0   # unmapped: no permissions


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=60),
       st.integers(0, 2**64 - 1), st.integers(0, 20))
def test_counted_unique_equals_numpy_unique(spread: list[int], base: int, shift: int) -> None:
    # Close values are counted over their span, spread ones sorted: both as np.unique.
    from s2mmu.arch.batch import _unique_inverse
    for values in (spread, [(base >> shift) + (v % 700) for v in spread]):
        x = np.array([v % 2**64 for v in values], dtype=np.uint64)
        want_u, want_inv = np.unique(x, return_inverse=True)
        got_u, got_inv = _unique_inverse(x)
        assert got_u.dtype == x.dtype
        assert got_u.tolist() == want_u.tolist()
        assert got_inv.tolist() == want_inv.reshape(-1).tolist()


XS_CASE = {
    "name": "xs_attribute", "el": "EL2",
    "regs": {"SCTLR_EL1": "0x30d00801", "TCR_EL1": "0x580903510", "MAIR_EL1": "0x44a00540",
             "TTBR0_EL1": "0x60000000", "HCR_EL2": "0x80000001", "VTCR_EL2": "0x80623558",
             "VTTBR_EL2": "0x61000000"},
    "memory": [{"pa": "0x60000008", "words": ["0x60001003"]},
               {"pa": "0x60001008", "words": ["0x60002003"]},
               {"pa": "0x60002008", "words": ["0x60003003"]},
               {"pa": "0x60003008", "words": ["0x90000703", "0x90001707", "0x9000270b",
                                              "0x9000370f"]},
               {"pa": "0x61000008", "words": ["0x400007fd"]},
               {"pa": "0x61000010", "words": ["0x61001003"]},
               {"pa": "0x61001400", "words": ["0x61002003"]},
               {"pa": "0x61002000", "words": ["0x900007d7", "0x90001fd7", "0x900027ff",
                                              "0x900037d7"]}],
}
"""Stage 1 MAIR 0x40 / 0x05 / 0xA0 / 0x44 over stage-2 NC, NC with FnXS, WB, NC."""


def test_batch_equals_scalar_with_feat_xs_and_fnxs_per_lane() -> None:
    ops = [["S12E1R", hex(0x8040200000 + page * 0x1000 + off)]
           for off in range(0, 0x1000, 0x100) for page in (1, 2, 3, 4)]
    case = parse_case({**XS_CASE, "ops": ops})
    fs = qemu_7_2_max_xs()
    got = run_case(case, fs)
    assert got == scalar_json(case, fs)
    attrs = [int(op["PAR_EL1"], 16) >> 56 for op in got["ops"][:4]]
    assert attrs == [0x40, 0x05, 0xA0, 0x44]


@pytest.mark.parametrize("family", ["broken", "stage2", "dc_cd"])
def test_batch_equals_scalar_on_conformance_families_with_feat_xs(family: str) -> None:
    rng = random.Random(family)
    for index in range(4):
        case = widened(generate_case(family, 5, index), rng)
        assert run_case(case, qemu_7_2_max_xs()) == scalar_json(case, qemu_7_2_max_xs())


def _pie_regs_mem(ha: bool) -> tuple[SysRegs, PhysMem]:
    """Sixteen pages, one per PIIndex, POIndex i % 8, nDirty set on odd pages."""
    from s2mmu.arch.registers import HCRX_EL2
    mem = PhysMem()
    s1 = TableBuilder(mem, BumpAllocator(0x4000_0000, 0x4100_0000), Granule.G4K, 48, 0)
    for i in range(16):
        attrs = s1_attrs(el0=bool(i & 1), dbm=bool(i & 2), pxn=bool(i & 4), uxn=bool(i & 8),
                         ro=bool(i & 1)) | (i % 8) << 60
        s1.map(0x8000_0000 + i * 4096, 0x9000_0000 + i * 4096, 4096, attrs)
    tcr = TCR_EL1.encode(T0SZ=16, TG0=0, IPS=5, SH0=3, IRGN0=1, ORGN0=1, EPD1=1,
                         HA=int(ha), HD=int(ha))
    return SysRegs(SCTLR_EL1=0x30D00801, MAIR_EL1=0xFF, TTBR0_EL1=s1.root, TCR_EL1=tcr,
                   TCR2_EL1=0b1110, HCRX_EL2=HCRX_EL2.encode(TCR2En=1),
                   PIR_EL1=0x5E7C_0A36_C8A6_0C5E, PIRE0_EL1=0x0203_0C80_0A0D_0E01,
                   POR_EL1=0x1234_5670, POR_EL0=0x7654_3217), mem


@pytest.mark.parametrize("ha", [False, True])
@pytest.mark.parametrize("access", [acc_gpr(1, False), acc_gpr(1, True), acc_gpr(0, False),
                                    acc_gpr(0, True), acc_ifetch(1), acc_ifetch(0)])
def test_batch_equals_scalar_with_indirect_permissions_and_overlays(ha, access) -> None:
    # FEAT_S1PIE/S1POE are inputs to the scalar path the batch runs once per key; the
    # key holds PIIndex, POIndex and nDirty (descriptor bits outside the output address),
    # and a PIE write with HD may clear nDirty whatever DBM holds (answered in order).
    from s2mmu.arch.features import server_v9_4_pie
    regs, _ = _pie_regs_mem(ha)
    vas = [0x8000_0000 + (i % 16) * 4096 + (i * 8) % 4096 for i in range(48)]
    env_b = Env(_pie_regs_mem(ha)[1], server_v9_4_pie())
    env_s = Env(_pie_regs_mem(ha)[1], server_v9_4_pie())
    got = translate_batch(regs, Regime.EL10, vas, access, env_b)
    for i, va in enumerate(vas):
        want = full_translate(regs, Regime.EL10, va, access, env_s)
        assert int(got.par[i]) == encode_par(want, env_s), hex(va)
        if not isinstance(want, FaultRecord):
            assert int(got.pa[i]) == want.paddress
    assert env_b.mem.hw_writes == env_s.mem.hw_writes


def _s2pie_regs_mem(hd: bool) -> tuple[SysRegs, PhysMem]:
    """Stage 1 maps 16 pages; stage 2 gives each a different PIIndex, POIndex and Dirty."""
    mem = PhysMem()
    s1 = TableBuilder(mem, BumpAllocator(0x4000_0000, 0x4100_0000), Granule.G4K, 48, 0)
    s1.map(0x8000_0000, 0x9000_0000, 16 * 4096, s1_attrs())
    s2 = TableBuilder(mem, BumpAllocator(0x5000_0000, 0x5100_0000), Granule.G4K, 48, 0)
    s2.map(0x4000_0000, 0x4000_0000, 4 << 20, s2_attrs())
    for i in range(16):
        attrs = (s2_attrs(s2ap=0b01 | (i & 1) << 1, xn=i >> 2, dbm=bool(i & 2))
                 | (i & 1) << 6 | (i % 16) << 59)
        s2.map(0x9000_0000 + i * 4096, 0x9000_0000 + i * 4096, 4096, attrs)
    tcr = TCR_EL1.encode(T0SZ=16, TG0=0, IPS=5, SH0=3, IRGN0=1, ORGN0=1)
    vtcr = VTCR_EL2.encode(T0SZ=16, SL0=2, TG0=0, PS=5, SH0=3, IRGN0=1, ORGN0=1, S2PIE=1,
                           S2POE=1, HA=int(hd), HD=int(hd))
    return SysRegs(SCTLR_EL1=0x30D00801, MAIR_EL1=0xFF, TTBR0_EL1=s1.root, TCR_EL1=tcr,
                   HCR_EL2=0x80000001, VTCR_EL2=vtcr, VTTBR_EL2=s2.root,
                   S2PIR_EL2=0xFEDC_BA98_F2F3_C8CF, S2POR_EL1=0xFFFF_FFFF_CFCF_8F0F), mem


@pytest.mark.parametrize("hd", [False, True])
@pytest.mark.parametrize("access", [acc_gpr(1, False), acc_gpr(1, True), acc_gpr(0, True),
                                    acc_ifetch(1), acc_ifetch(0)])
def test_batch_equals_scalar_with_stage2_indirect_permissions(hd, access) -> None:
    from s2mmu.arch.features import server_v9_4_pie
    regs, _ = _s2pie_regs_mem(hd)
    vas = [0x8000_0000 + (i % 16) * 4096 + (i * 24) % 4096 for i in range(40)]
    env_b = Env(_s2pie_regs_mem(hd)[1], server_v9_4_pie())
    env_s = Env(_s2pie_regs_mem(hd)[1], server_v9_4_pie())
    got = translate_batch(regs, Regime.EL10, vas, access, env_b)
    for i, va in enumerate(vas):
        want = full_translate(regs, Regime.EL10, va, access, env_s)
        assert int(got.par[i]) == encode_par(want, env_s), hex(va)
    assert env_b.mem.hw_writes == env_s.mem.hw_writes


@pytest.mark.parametrize("haft", [0, 1])
def test_batch_routes_haft_configurations_to_the_scalar_path(haft) -> None:
    # FEAT_HAFT sets AF in table descriptors, which the batch walk does not do: with
    # TCR2_EL1.HAFT on every lane is answered by the scalar path (and equals it); with
    # it off the batch engine answers as before.
    from s2mmu.arch.features import server_v9_4_haft
    from s2mmu.arch.registers import HCRX_EL2, TCR2_EL1

    def regs_mem() -> tuple[SysRegs, PhysMem]:
        mem = PhysMem()
        s1 = TableBuilder(mem, BumpAllocator(0x4000_0000, 0x4100_0000), Granule.G4K, 48, 0)
        s1.map(0x8000_0000, 0x9000_0000, 16 * 4096, s1_attrs())
        tcr = TCR_EL1.encode(T0SZ=16, TG0=0, IPS=5, SH0=3, IRGN0=1, ORGN0=1, EPD1=1, HA=1)
        return SysRegs(SCTLR_EL1=0x30D00801, MAIR_EL1=0xFF, TTBR0_EL1=s1.root, TCR_EL1=tcr,
                       TCR2_EL1=TCR2_EL1.encode(HAFT=haft),
                       HCRX_EL2=HCRX_EL2.encode(TCR2En=1)), mem

    regs, mem_b = regs_mem()
    _, mem_s = regs_mem()
    env_b, env_s = Env(mem_b, server_v9_4_haft()), Env(mem_s, server_v9_4_haft())
    vas = [0x8000_0000 + (i % 16) * 4096 for i in range(32)]
    got = translate_batch(regs, Regime.EL10, vas, acc_gpr(1, False), env_b)
    for i, va in enumerate(vas):
        want = full_translate(regs, Regime.EL10, va, acc_gpr(1, False), env_s)
        assert int(got.par[i]) == encode_par(want, env_s), hex(va)
    assert env_b.mem.hw_writes == env_s.mem.hw_writes
    assert got.scalar_lanes == (len(vas) if haft else 0)
    assert len([w for w in env_s.mem.hw_writes if w.before & 3 == 3 and w.pa < 0x4000_3000]
               ) == (3 if haft else 0)
