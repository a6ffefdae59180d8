"""What QEMU 7.2 computes where it departs from the architecture, as small functions.

The divergence list (divergences.py) excuses a difference only when QEMU's answer is
exactly what these functions predict from the translation's stage-1 and stage-2
inputs, and the two answers agree everywhere else. The inputs (the stage-1 MAIR byte
and SH, the stage-2 MemAttr and SH, the levels) come from the model's walk of the same
tables: if the model had walked to a different leaf, the PAs would already differ and
nothing would be excused.

QEMU 7.2 sources read: target/arm/ptw.c (get_phys_addr_disabled, combine_cacheattrs,
combined_attrs_nofwb, combined_attrs_fwb, combine_cacheattr_nibble,
convert_stage2_attrs, get_phys_addr_twostage).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from s2mmu.arch.access import acc_at
from s2mmu.arch.access_op import AccessOp, access_descriptor
from s2mmu.arch.at import at_regime
from s2mmu.arch.atcase import load_memory, parse_case
from s2mmu.arch.bits import bit, bits
from s2mmu.arch.descriptors import Block, Page, attrindx, s2_memattr, sh
from s2mmu.arch.errors import InputError
from s2mmu.arch.faults import FaultRecord
from s2mmu.arch.features import qemu_7_2_max
from s2mmu.arch.params import get_s1_ttw_params, get_s2_ttw_params
from s2mmu.arch.state import regime_for
from s2mmu.arch.translate import Env, full_translate
from s2mmu.arch.walk import WalkStep


@dataclass(frozen=True)
class WalkFacts:
    """What one op's translation read, from the model's walk."""

    s1_attr: int | None      # the MAIR byte of the stage-1 leaf (None: stage 1 off)
    s1_sh: int
    s2_memattr: int | None   # MemAttr[3:0] of the stage-2 leaf (None: no stage 2)
    s2_sh: int
    fwb: bool
    cd: bool
    s1_walk_level: int | None  # stage-1 level whose table access stage 2 faulted on
    fault: FaultRecord | None
    s1_leaf_pa: int | None = None  # where the stage-1 leaf descriptor is (PA)
    s2_leaf_pa: int | None = None  # where the stage-2 leaf of the output address is (PA)
    last: LastRead | None = None   # the last descriptor the walk read
    ttb_oa_high: bool = False      # DS=1, TTBR BADDR[51:48] (bits [5:2]) set, PS below 52


@dataclass(frozen=True)
class LastRead:
    """The last descriptor a walk read, with its stage's granule, DS and output size."""

    stage: int
    level: int
    raw: int
    granule_bits: int
    ds: bool
    ps_bits: int


def walk_facts(source: Mapping[str, Any], op_index: int) -> WalkFacts | None:
    """Return the model's view of op op_index of a case object (None if unreadable)."""
    try:
        case = parse_case(dict(source))
    except InputError:
        return None
    spec = case.ops[op_index]
    env = Env(load_memory(case), qemu_7_2_max())
    trace: list[WalkStep] = []
    if isinstance(spec.op, AccessOp):
        regime = regime_for(spec.el, case.regs)
        access = access_descriptor(spec.op, spec.el, spec.pan,
                                   aligned=not spec.va % spec.op.size)
        stage = 12
    else:  # as execute_at builds it: the permission-checking EL of the regime
        op = spec.op
        regime, perm_el = at_regime(op, case.regs)
        access = acc_at(perm_el, op.write, pan=op.pan_aware and spec.pan,
                        any_access=op.any_access)
        stage = op.stage
    if spec.op is AccessOp.STXR:   # its LDXR runs first: a fault of that read is the op's
        first = access_descriptor(AccessOp.LDXR, spec.el, spec.pan)
        result = full_translate(case.regs, regime, spec.va, first, env, trace=trace)
        if not isinstance(result, FaultRecord):
            trace.clear()
            result = full_translate(case.regs, regime, spec.va, access, env, trace=trace)
    else:
        result = full_translate(case.regs, regime, spec.va, access, env,
                                stage1_only=stage == 1, trace=trace)
    s1 = [s for s in trace if s.stage == 1]
    s2_leaf = [s for s in trace if s.stage == 2 and isinstance(s.decoded, Block | Page)]
    s1_leaf = s1[-1] if s1 and isinstance(s1[-1].decoded, Block | Page) else None
    hcr = case.regs.HCR_EL2
    mair = case.regs.MAIR_EL1 if regime.value == "EL1&0" else case.regs.MAIR_EL2
    s1_attr = None
    if s1_leaf is not None:
        idx = attrindx(s1_leaf.raw)
        s1_attr = bits(mair, 8 * idx + 7, 8 * idx)
    fault = result if isinstance(result, FaultRecord) else None
    s1p = get_s1_ttw_params(case.regs, regime, spec.va, env.fs, env.choices)
    s2p = get_s2_ttw_params(case.regs, env.fs, env.choices)
    return WalkFacts(
        s1_attr=s1_attr, s1_sh=leaf_sh(s1_leaf.raw, s1p.ds, s1p.sh) if s1_leaf else 0,
        s2_memattr=s2_memattr(s2_leaf[-1].raw) if s2_leaf and stage == 12 else None,
        s2_sh=leaf_sh(s2_leaf[-1].raw, s2p.ds, s2p.sh) if s2_leaf else 0,
        fwb=bool(bit(hcr, 46)), cd=bool(bit(hcr, 32)),
        s1_walk_level=s1_level_of_walk_fault(case.regs, regime, spec.va, s1, env),
        fault=fault, s1_leaf_pa=s1_leaf.paddress if s1_leaf else None,
        s2_leaf_pa=s2_output_leaf_pa(trace, s1_leaf), last=last_read(trace, s1p, s2p),
        ttb_oa_high=s1p.ds and bool(s1p.ttb >> 2 & 0xF) and s1p.ps < 52)


def last_read(trace: list[WalkStep], s1p: Any, s2p: Any) -> LastRead | None:
    """Return the last descriptor of a walk with the parameters of its stage."""
    if not trace:
        return None
    step = trace[-1]
    p = s1p if step.stage == 1 else s2p
    return LastRead(stage=step.stage, level=step.level, raw=step.raw,
                    granule_bits=p.tgx.bits, ds=p.ds, ps_bits=p.ps)


def s2_output_leaf_pa(trace: list[WalkStep], s1_leaf: WalkStep | None) -> int | None:
    """Return the PA of the stage-2 leaf that translated the output address: the last
    stage-2 leaf read after the stage-1 leaf (or with no stage 1 at all)."""
    after = trace[trace.index(s1_leaf) + 1:] if s1_leaf is not None else trace
    if s1_leaf is None and any(s.stage == 1 for s in trace):
        return None
    leaves = [s for s in after if s.stage == 2 and isinstance(s.decoded, Block | Page)]
    return leaves[-1].paddress if leaves else None


def leaf_sh(raw: int, ds: bool, tcr_sh: int) -> int:
    """Return a leaf's SH as the walk reads it: TCR_ELx.SHx/VTCR_EL2.SH0 when DS=1 (the
    descriptor's bits [9:8] then hold OA[51:50]; ASL AArch64.S1DecodeMemAttrs callers,
    QEMU 7.2 get_phys_addr_lpae's `param.ds` branch), else descriptor bits [9:8]."""
    return tcr_sh if ds else sh(raw)


def s1_level_of_walk_fault(regs: Any, regime: Any, va: int, s1: list[WalkStep],
                           env: Env) -> int | None:
    """Return the stage-1 level being accessed when a stage-1 walk access faults.

    After a leaf, the access is the leaf's own update; otherwise the next level (or the
    start level when no stage-1 descriptor was read).
    """
    if s1 and isinstance(s1[-1].decoded, Block | Page):
        return s1[-1].level
    if s1:
        return s1[-1].level + 1
    params = get_s1_ttw_params(regs, regime, va, env.fs, env.choices)
    return params.startlevel()


# --- QEMU 7.2's attribute combination -------------------------------------------------------


def convert_stage2_attrs(memattr: int, cd: bool) -> int:
    """Return QEMU's MAIR-format byte for a stage-2 MemAttr without FWB."""
    hi, lo = bits(memattr, 3, 2), bits(memattr, 1, 0)
    hihint = lohint = 0
    if hi:
        if cd:
            hi = lo = 1
        else:
            hihint = 3 if hi != 1 else 0
            lohint = 3 if lo != 1 else 0
    return hi << 6 | hihint << 4 | lo << 2 | lohint


def combine_nibble(s1: int, s2: int) -> int:
    """Return QEMU's combined cacheability nibble (combine_cacheattr_nibble)."""
    if s1 == 4 or s2 == 4:
        return 4
    if bits(s1, 3, 2) in (0, 2):
        return s1
    if bits(s2, 3, 2) == 2:
        return 2 << 2 | bits(s1, 1, 0)
    return s1


def combined_attrs_nofwb(s1: int, s2: int) -> int:
    """Return QEMU 7.2's combination without FWB (reads low nibbles as Device types)."""
    s1lo, s2lo, s1hi, s2hi = s1 & 0xF, s2 & 0xF, s1 >> 4, s2 >> 4
    if s1hi == 0 or s2hi == 0:
        if s1lo == 0 or s2lo == 0:
            return 0x00
        if s1lo == 4 or s2lo == 4:
            return 0x04
        if s1lo == 8 or s2lo == 8:
            return 0x08
        return 0x0C
    return combine_nibble(s1hi, s2hi) << 4 | combine_nibble(s1lo, s2lo)


def force_wb_nibble(n: int) -> int:
    """Return QEMU's nibble forced to Write-Back, keeping stage 1's hints when cacheable."""
    if n in (0, 4):
        return 0xF
    return n | 0b0100


def combined_attrs_fwb(s1: int, memattr: int) -> int:
    """Return QEMU 7.2's combination with FWB (combined_attrs_fwb)."""
    if memattr == 7:
        return s1
    if memattr == 6:
        if s1 >> 4 == 0:
            return 0xFF
        return force_wb_nibble(s1 >> 4) << 4 | force_wb_nibble(s1 & 0xF)
    if memattr == 5:
        return s1 if s1 >> 4 == 0 else 0x44
    if memattr <= 3:
        return memattr << 2
    return 0x00


def qemu_par_attrs(f: WalkFacts) -> tuple[int, int] | None:
    """Return (ATTR, SH) QEMU 7.2 reports for a two-stage result, or None if unknown.

    Stage 1 off gives Device-nGnRnE with shareability 0 (get_phys_addr_disabled).
    """
    if f.s2_memattr is None:
        return None
    s1_attr = 0x00 if f.s1_attr is None else f.s1_attr
    s1_sh = 0 if f.s1_attr is None else f.s1_sh
    if f.fwb:
        attr = combined_attrs_fwb(s1_attr, f.s2_memattr)
    else:
        attr = combined_attrs_nofwb(s1_attr, convert_stage2_attrs(f.s2_memattr, f.cd))
    if 2 in (s1_sh, f.s2_sh):
        shv = 2
    elif 3 in (s1_sh, f.s2_sh):
        shv = 3
    else:
        shv = 0
    if attr >> 4 == 0 or attr == 0x44:
        shv = 2
    return attr, shv
