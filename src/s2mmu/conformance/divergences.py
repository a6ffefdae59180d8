"""The one list of intended divergences between the model and QEMU, with reasons.

Each departure is tagged with the QEMU series that have it (`Divergence.series`, measured
on Debian 12's 7.2 and Debian's 10.0 from bookworm-backports); under a series without it,
it excuses nothing. The model follows the Arm ARM; where QEMU (`-cpu max`) departs from it,
the comparison reports the op as an intended divergence instead of a mismatch
(shared/formats/at-case.md, "QEMU's departures listed"). A divergence applies only when
the two answers differ in the way the departure predicts, so an entry can never hide
an unrelated disagreement on the same op: each `applies` checks the configuration that
triggers the departure *and* the shape of both answers.

Evidence for each entry is a test in tests/conformance/test_divergences.py that runs the
triggering configuration on QEMU and checks that QEMU behaves as described here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from s2mmu.arch.attrs import mair_reserved
from s2mmu.arch.descriptors import DescContext, output_address
from s2mmu.arch.faults import Fault, hpfar
from s2mmu.arch.params import Granule
from s2mmu.arch.translate import s2_memattr_is_device
from s2mmu.conformance.casefile import AtOp, HarnessCase, parse_cases
from s2mmu.conformance.qemu72 import LastRead, WalkFacts, qemu_par_attrs, walk_facts

PS_BITS = (32, 36, 40, 42, 44, 48, 52, 52)
PAMAX = 52

TAG_ILLEGAL_BLOCK = "illegal_block"
TAG_OA_52BIT_FIELDS = "oa_52bit_fields"
"""Names the generator gives the departures a case can trigger (`divergence_tags`, for
people reading a case); no predicate reads them: each decides from the case's registers,
memory, the model's walk and the two answers."""


@dataclass(frozen=True)
class OpEvidence:
    """One op and both answers, with the case it came from."""

    case: HarnessCase
    op: AtOp
    qemu: Mapping[str, Any]
    model: Mapping[str, Any]
    index: int = 0
    series: str = "7.2"
    """The QEMU series that gave `qemu` (a predicate may predict its answer per series)."""



MEASURED_SERIES = ("7.2", "10.0")
"""The QEMU series the departures were measured on (qemu_binary.SERIES)."""
QEMU_7_2 = frozenset({"7.2"})
QEMU_7_2_AND_10_0 = frozenset({"7.2", "10.0"})
QEMU_10_0 = frozenset({"10.0"})


@dataclass(frozen=True)
class Divergence:
    """An intended divergence: its name, why, when it explains a difference, and the QEMU
    series that have it (measured: a departure 10.0 no longer has excuses nothing there)."""

    name: str
    reason: str
    applies: Callable[[OpEvidence], bool]
    changes_walk: bool = False
    """QEMU walks where the model faults (or the reverse), so the descriptor updates of
    the op it explains differ too: only such a divergence excuses its op's memory changes."""
    series: frozenset[str] = QEMU_7_2


def measured_series(series: str) -> str:
    """Return the measured series whose departures a QEMU series is judged by: its own,
    else the latest measured one before it (the earliest for anything older).

    A QEMU given by path (an 8.2, say) keeps 7.2's departures until it is measured.
    """
    def key(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in text.split(".") if part.isdigit())

    earlier = [m for m in MEASURED_SERIES if key(m) <= key(series)]
    return earlier[-1] if earlier else MEASURED_SERIES[0]


def has_departure(divergence: Divergence, series: str) -> bool:
    """Return whether QEMU `series` has a departure (judged by its measured series)."""
    return measured_series(series) in divergence.series


# --- Reading answers ----------------------------------------------------------------------


def par(answer: Mapping[str, Any]) -> int | None:
    """Return an answer's PAR_EL1, or None if the op did not end with one."""
    if answer.get("outcome") != "par":
        return None
    return int(str(answer["PAR_EL1"]), 16)


def fault_status(value: int) -> tuple[bool, int] | None:
    """Return (stage 2, FST) of a faulting PAR_EL1, or None for a translation."""
    if not value & 1:
        return None
    return bool(value >> 9 & 1), value >> 1 & 0x3F


def is_translation_fault(fst: int) -> bool:
    """Return whether an FST/FSC is a Translation fault (levels 0-3, or -1: 0b101011)."""
    return fst >> 2 == 0b0001 or fst == 0b101011


def is_address_size_fault(fst: int) -> bool:
    """Return whether an FST/FSC is an Address size fault (levels 0-3, or -1: 0b101001)."""
    return fst >> 2 == 0b0000 or fst == 0b101001


def fsc_of(answer: Mapping[str, Any]) -> tuple[bool, int] | None:
    """Return (stage 2, status code) of an answer's fault, from PAR or ESR."""
    value = par(answer)
    if value is not None:
        return fault_status(value)
    if answer.get("outcome") == "exception" and answer.get("taken_to") == "EL2":
        esr = int(str(answer["ESR"]), 16)
        if esr >> 26 & 0x3F in (0x20, 0x24):
            return True, esr & 0x3F
    return None


# --- PAR_EL1.SH for stage-1 results -------------------------------------------------------


def sh_for_device_or_nc(ev: OpEvidence) -> bool:
    """QEMU reports the descriptor's SH (0b00 with the MMU off) where SH must be 0b10."""
    qemu, model = par(ev.qemu), par(ev.model)
    if qemu is None or model is None or qemu & 1 or model & 1:
        return False
    sh_mask = 0b11 << 7
    attr = model >> 56
    device_or_nc = attr >> 4 == 0 or attr == 0x44
    return qemu & ~sh_mask == model & ~sh_mask and model & sh_mask == 0b10 << 7 and device_or_nc


def sh_reserved(ev: OpEvidence) -> bool:
    """QEMU copies a descriptor's reserved SH=0b01 into PAR_EL1.SH; the model does not."""
    qemu, model = par(ev.qemu), par(ev.model)
    if qemu is None or model is None or qemu & 1 or model & 1:
        return False
    sh_mask = 0b11 << 7
    return qemu & ~sh_mask == model & ~sh_mask and qemu & sh_mask == 0b01 << 7 \
        and model & sh_mask != 0b01 << 7


# --- Allocation hints of combined attributes ------------------------------------------------


def transient_dropped(ev: OpEvidence) -> bool:
    """QEMU turns stage-1 Write-Back Transient under stage-2 Write-Through into WT
    non-transient (0b10RW); S2CombineS1AttrHints keeps the transient hint (0b00RW)."""
    qemu, model = par(ev.qemu), par(ev.model)
    if qemu is None or model is None or qemu & 1 or model & 1:
        return False
    attr_mask = 0xFF << 56
    if qemu & ~attr_mask != model & ~attr_mask or qemu == model:
        return False
    for shift in (56, 60):
        q, m = qemu >> shift & 0xF, model >> shift & 0xF
        if q != m and not (m >> 2 == 0b00 and m & 3 and q == 0b1000 | (m & 3)):
            return False
    return True


# --- Blocks where the granule allows none -------------------------------------------------


def block_levels(granule_bits: int, ds: bool) -> tuple[int, ...]:
    """Return the levels where a granule allows blocks (ASL AArch64.BlockDescSupported,
    with PAMax 52 as on QEMU's -cpu max: 64K level 1 is allowed)."""
    if granule_bits == 12:
        return (0, 1, 2) if ds else (1, 2)
    if granule_bits == 14:
        return (1, 2) if ds else (2,)
    return (1, 2)


def block_at_illegal_level(ev: OpEvidence) -> bool:
    """QEMU takes a block descriptor at a level that allows none; the model faults there
    (Translation fault at that level, the last descriptor the walk read a block)."""
    fault = fsc_of(ev.model)
    f = facts(ev)
    if fault is None or f is None or f.last is None or not is_translation_fault(fault[1]):
        return False
    last = f.last
    is_block = last.raw & 0b11 == 0b01 and last.level < 3
    if not is_block or last.level in block_levels(last.granule_bits, last.ds) \
            or fsc_kind_level(fault[1]) != (0b0001, last.level):
        return False
    return qemu_took_the_block(ev, last)


BLOCK_FAULT_KINDS = (0b0000, 0b0010, 0b0011)
"""The faults a leaf's own checks give (Address size, Access flag, Permission)."""


def qemu_took_the_block(ev: OpEvidence, last: LastRead) -> bool:
    """Return whether QEMU's answer is the huge block's: its output address plus the input
    offset in PAR_EL1 (stage-1 alone), or a fault of the block's own checks at its level
    (its output beyond the output size, its AF, its permissions)."""
    value, model = par(ev.qemu), par(ev.model)
    if value is None or model is None:
        return False
    if value & 1:
        fst = 0x3F << 1
        kind, level = fsc_kind_level(value >> 1 & 0x3F)
        return kind in BLOCK_FAULT_KINDS and level == last.level and value & ~fst == model & ~fst
    granule = {12: Granule.G4K, 14: Granule.G16K, 16: Granule.G64K}[last.granule_bits]
    lsb = last.granule_bits + (3 - last.level) * (last.granule_bits - 3)
    ctx = DescContext(granule=granule, ds=last.ds, lpa=True, stage=last.stage, pamax52=True)
    expected = output_address(last.raw, lsb, ctx) | ev.op.va & (1 << lsb) - 1
    return last.stage == 2 or value & 0xF_FFFF_FFFF_F000 == expected & 0xF_FFFF_FFFF_F000


def oa_52bit_fields_ignored(ev: OpEvidence) -> bool:
    """QEMU ignores OA[51:48] (64K, bits [15:12]) and OA[51:50] (DS, bits [9:8]) below PS 52:
    the model's Address size fault is on the last descriptor read, whose high output-address
    bits are set and beyond its stage's output size (or, before any read, on a TTBR whose
    BADDR[51:48] is set with DS=1)."""
    fault = fsc_of(ev.model)
    f = facts(ev)
    if fault is None or f is None or not is_address_size_fault(fault[1]):
        return False
    if f.last is None:  # nothing read: the table base of TTBRn_ELx itself
        return f.ttb_oa_high and dict(ev.qemu) != dict(ev.model)
    last = f.last
    if last.granule_bits == 16:
        high = last.raw >> 12 & 0xF
    elif last.ds:
        high = last.raw >> 8 & 0x3
    else:
        return False
    return bool(high) and last.ps_bits < 52 and dict(ev.qemu) != dict(ev.model)


# --- Stage-2 start level checked against VTCR_EL2.PS --------------------------------------


@dataclass(frozen=True)
class S2Setup:
    """The VTCR_EL2 fields that decide whether a stage-2 walk may start."""

    granule: int
    start_level: int | None
    ia_bits: int
    ps_bits: int
    ds: bool

    @classmethod
    def from_vtcr(cls, vtcr: int) -> S2Setup | None:
        """Decode VTCR_EL2, or None for a reserved TG0."""
        granule = {0: 12, 1: 16, 2: 14}.get(vtcr >> 14 & 3)
        if granule is None:
            return None
        ds = bool(vtcr >> 32 & 1) and granule != 16
        return cls(granule=granule, start_level=s2_start_level(granule, vtcr, ds),
                   ia_bits=64 - (vtcr & 0x3F), ps_bits=PS_BITS[vtcr >> 16 & 7], ds=ds)


def s2_start_level(granule: int, vtcr: int, ds: bool) -> int | None:
    """Return the start level VTCR_EL2.{SL2,SL0} selects, or None if reserved."""
    sl0, sl2 = vtcr >> 6 & 3, vtcr >> 33 & 1
    if granule == 12:
        if ds and sl2:
            return -1 if sl0 == 0 else None
        return {0: 2, 1: 1, 2: 0, 3: 3}[sl0]
    if granule == 14:
        return 3 - sl0
    return None if sl0 == 3 else 3 - sl0


def architecture_accepts(setup: S2Setup) -> bool:
    """Return whether the Arm ARM accepts the start level for the IPA size (PAMax 52).

    ASL: AArch64.S2InvalidSL and AArch64.S2InconsistentSL (1 bit to 16 tables).
    """
    level = setup.start_level
    if level is None or (setup.granule == 14 and level == 0 and not setup.ds):
        return False
    stride = setup.granule - 3
    low = (3 - level) * stride + setup.granule + 1
    max_ia = 52 if setup.ds or setup.granule == 16 else 48
    return low <= setup.ia_bits <= low + stride + 3 and setup.ia_bits <= min(max_ia, PAMAX)


def qemu_rejects(setup: S2Setup) -> bool:
    """Return whether QEMU 7.2 rejects a stage-2 setup the architecture accepts.

    Measured on Debian 12's QEMU 7.2 (tests/conformance/test_divergences.py): it faults
    when the IPA size exceeds VTCR_EL2.PS, at 4K level 0 with PS <= 42 bits, at 16K level
    1 with PS <= 40 and at 16K level 0 always, at 64K level 1 with PS <= 42, and at 4K
    level -1 unless the IPA size is 52 bits.
    """
    if not architecture_accepts(setup):
        return False
    level, ps, granule = setup.start_level, setup.ps_bits, setup.granule
    return (setup.ia_bits > ps
            or (granule == 12 and level == 0 and ps <= 42)
            or (granule == 14 and (level == 0 or (level == 1 and ps <= 40)))
            or (granule == 16 and level == 1 and ps <= 42)
            or (granule == 12 and level == -1 and setup.ia_bits < 52))


def s2_start_level_vs_ps(ev: OpEvidence) -> bool:
    """QEMU faults (stage 2 Translation) on a setup only PS rules out.

    The level QEMU reports is 0 for the op's own stage-2 walk, and the stage-1 level for
    a stage-1 table walk (QEMU reports stage-2 faults on walks at the stage-1 level).
    """
    setup = S2Setup.from_vtcr(ev.case.regs["VTCR_EL2"])
    hcr = ev.case.regs["HCR_EL2"]
    if setup is None or not hcr & (1 | 1 << 12) or not qemu_rejects(setup):
        return False
    fault = fsc_of(ev.qemu)
    return fault is not None and fault[0] and is_translation_fault(fault[1]) \
        and dict(ev.qemu) != dict(ev.model)


# --- Attribute combination (QEMU 7.2 combine_cacheattrs) -----------------------------------

ATTR_SH_MASK = 0xFF << 56 | 0b11 << 7


def facts(ev: OpEvidence) -> WalkFacts | None:
    """Return the model's walk facts for the op (what the translation read)."""
    return walk_facts(ev.case.source, ev.index)


def is_device_attr(attr: int | None) -> bool:
    """Return whether a MAIR-format byte is Device (None: stage 1 off, Device for data)."""
    return attr is None or attr >> 4 == 0


def qemu_combination_explains(ev: OpEvidence, trigger: Any) -> bool:
    """Return whether the PARs differ only in ATTR/SH and QEMU's is QEMU's combination."""
    qemu, model = par(ev.qemu), par(ev.model)
    if qemu is None or model is None or qemu & 1 or model & 1 or qemu == model:
        return False
    if qemu & ~ATTR_SH_MASK != model & ~ATTR_SH_MASK:
        return False
    f = facts(ev)
    if f is None or f.s2_memattr is None or not trigger(f):
        return False
    return qemu_par_attrs(f) == (qemu >> 56, qemu >> 7 & 0b11)


def fwb_reserved_memattr(ev: OpEvidence) -> bool:
    """FWB with MemAttr[3]=1 or MemAttr=0b0100: QEMU forces Device-nGnRnE."""
    return qemu_combination_explains(ev, lambda f: f.fwb and (
        f.s2_memattr & 0b1000 or f.s2_memattr == 0b0100))


def fwb_device_not_stricter(ev: OpEvidence) -> bool:
    """FWB Device at stage 2 over stage-1 Device: QEMU takes stage 2's type."""
    return qemu_combination_explains(ev, lambda f: f.fwb and f.s2_memattr < 0b0100
                                     and is_device_attr(f.s1_attr))


def nofwb_device_with_normal(ev: OpEvidence) -> bool:
    """Without FWB, Device at one stage and Normal at the other: QEMU reads the Normal
    side's low nibble as a Device type (Non-cacheable 0b0100 becomes nGnRE)."""
    return qemu_combination_explains(ev, lambda f: not f.fwb and (
        is_device_attr(f.s1_attr) != (f.s2_memattr >> 2 == 0)))


def s1_off_shareability(ev: OpEvidence) -> bool:
    """Stage 1 off: QEMU gives the Device output shareability 0 in the combination."""
    qemu, model = par(ev.qemu), par(ev.model)
    if qemu is None or model is None or qemu >> 56 != model >> 56:
        return False
    return qemu_combination_explains(ev, lambda f: f.s1_attr is None)


def reserved_mair_as_is(ev: OpEvidence) -> bool:
    """A reserved MAIR byte: QEMU reports it in PAR_EL1.ATTR as programmed (stage 1), or
    feeds it to its combination (two stages); the model reads it as ImplChoices says."""
    qemu, model = par(ev.qemu), par(ev.model)
    if qemu is None or model is None or qemu & 1 or model & 1 or qemu == model:
        return False
    if qemu & ~ATTR_SH_MASK != model & ~ATTR_SH_MASK:
        return False
    f = facts(ev)
    if f is None or f.s1_attr is None or not mair_reserved(f.s1_attr):
        return False
    if f.s2_memattr is None:
        return (qemu >> 56, qemu >> 7 & 0b11) == (f.s1_attr, stage1_par_sh(f, ev.series))
    return qemu_par_attrs(f) == (qemu >> 56, qemu >> 7 & 0b11)


def stage1_par_sh(f: WalkFacts, series: str) -> int:
    """Return the PAR_EL1.SH a QEMU series reports for a stage-1-only result: 7.2 the
    descriptor's (par_sh_stage1), 10.0 0b10 where the byte reads as Device (high nibble 0)
    or Normal Non-cacheable (0x44, and 0x40: Non-cacheable with XS=0 under FEAT_XS), as the
    architecture says."""
    attr = f.s1_attr if f.s1_attr is not None else 0
    if measured_series(series) == "7.2" or not (attr >> 4 == 0 or attr in (0x44, 0x40)):
        return f.s1_sh
    return 0b10


# --- Level of a stage-2 fault on a stage-1 walk --------------------------------------------


def fsc_kind_level(fsc: int) -> tuple[int, int]:
    """Return (kind, level) of an FSC; level -1 codes map to the kind of levels 0-3."""
    minus1 = {0b101001: 0b0000, 0b101011: 0b0001, 0b010011: 0b0101}
    if fsc in minus1:
        return minus1[fsc], -1
    return fsc >> 2, fsc & 3


def walk_fault_codes(answer: Mapping[str, Any]) -> tuple[int, int] | None:
    """Return (FSC, answer with the FSC removed) for a fault on a stage-1 walk."""
    value = par(answer)
    if value is not None:
        if value & 1 and value >> 8 & 1 and value >> 9 & 1:
            return value >> 1 & 0x3F, value & ~(0x3F << 1)
        return None
    if answer.get("outcome") == "exception" and "ESR" in answer:
        esr = int(str(answer["ESR"]), 16)
        if esr >> 7 & 1:
            return esr & 0x3F, esr & ~0x3F
    return None


def s2_walk_fault_level(ev: OpEvidence) -> bool:
    """QEMU reports the stage-1 level for a stage-2 fault on a stage-1 walk."""
    q, m = walk_fault_codes(ev.qemu), walk_fault_codes(ev.model)
    if q is None or m is None or q[1] != m[1]:
        return False
    if {k: v for k, v in ev.qemu.items() if k not in ("PAR_EL1", "ESR")} != \
            {k: v for k, v in ev.model.items() if k not in ("PAR_EL1", "ESR")}:
        return False
    (qkind, qlevel), (mkind, mlevel) = fsc_kind_level(q[0]), fsc_kind_level(m[0])
    f = facts(ev)
    if f is None or f.fault is None or qkind != mkind or qlevel == mlevel:
        return False
    return mlevel == f.fault.level and qlevel == f.s1_walk_level


# --- HCR_EL2.TGE=1 (E2H=0) and the EL1&0 stage 1 -------------------------------------------

COMPARED_KEYS = ("outcome", "PAR_EL1", "taken_to", "ESR", "FAR", "HPFAR_EL2", "value", "insn",
                 "status")


def compared(answer: Mapping[str, Any]) -> dict[str, int | str]:
    """Return an op answer's compared fields (integers as integers)."""
    return {key: (str(answer[key]) if key in ("outcome", "taken_to") else int(str(answer[key]), 0))
            for key in COMPARED_KEYS if key in answer}


def evidence_without_tge(ev: OpEvidence) -> OpEvidence | None:
    """Return the op's evidence with HCR_EL2.TGE (and PTW) cleared: same QEMU answer, the
    model's answer and case for that configuration.

    The case's earlier ops run first, in the same configuration, so that their access
    flag updates are in memory as they are on QEMU.
    """
    return evidence_with_register(ev, "HCR_EL2",
                                  ev.case.regs["HCR_EL2"] & ~(1 << 27 | 1 << 2))


def tge_keeps_el1_stage1(ev: OpEvidence) -> bool:
    """HCR_EL2.TGE=1 with E2H=0: QEMU 7.2 still walks the EL1&0 stage 1 for AT S1E0*,
    S1E1* and S12E* (its regime_translation_disabled checks TGE only for the E10_* MMU
    indexes, not for the Stage1_E* ones AT and the stage-1 half of a two-stage lookup
    use). QEMU's answer must be the model's with TGE cleared."""
    hcr = ev.case.regs["HCR_EL2"]
    if not hcr >> 27 & 1 or hcr >> 34 & 1 or ev.op.el == 1 or ev.op.op.startswith("S1E2"):
        return False
    if compared(ev.qemu) == compared(ev.model):
        return False
    without = evidence_without_tge(ev)
    if without is None:
        return False
    if compared(without.model) == compared(ev.qemu):
        return True
    # With stage 1 walked, QEMU's other departures may apply on top: each checks its own
    # configuration and the exact shape of both answers.
    return any(d.applies(without) for d in DIVERGENCES if d.applies is not tge_keeps_el1_stage1)


# --- Real accesses ---------------------------------------------------------------------------

ACCESS_RT = {"LDR": 1, "STR": 4}
"""The transfer register of each access op (LDR X1, [X2]; STR X4, [X2])."""


def without_key(answer: Mapping[str, int | str], key: str) -> dict[str, int | str]:
    """Return compared fields less one."""
    return {k: v for k, v in answer.items() if k != key}


def isv_for_stage1_abort(ev: OpEvidence) -> bool:
    """QEMU 7.2 reports the instruction syndrome for a stage-1 data abort taken to EL2.

    The model's fault must be stage 1, QEMU's ESR exactly the model's with ISV=1, SAS=0b11,
    SRT=Rt and SF=1 added, and every other field equal.
    """
    if ev.op.op not in ACCESS_RT:
        return False
    q, m = compared(ev.qemu), compared(ev.model)
    if q.get("taken_to") != "EL2" or m.get("taken_to") != "EL2" or "ESR" not in m:
        return False
    f = facts(ev)
    # An Alignment fault without the syndrome is a stage-1 one: SCTLR_ELx.A, or Device
    # memory at stage 1 (a stage-2 Device alignment fault reports ISV=1 in the model).
    alignment = int(m["ESR"]) & 0x3F == ALIGNMENT_FSC
    if not alignment and (f is None or f.fault is None or f.fault.secondstage):
        return False
    syndrome = 1 << 24 | 0b11 << 22 | ACCESS_RT[ev.op.op] << 16 | 1 << 15
    model_esr = int(m["ESR"])
    return not model_esr & syndrome and q["ESR"] == model_esr | syndrome \
        and without_key(q, "ESR") == without_key(m, "ESR")


def hpfar_unknown_for_s2_permission(ev: OpEvidence) -> bool:
    """QEMU writes HPFAR_EL2 for a stage-2 Permission fault on the access itself, where
    the architecture leaves it UNKNOWN (ASL IPAValid: only Translation, Access flag and
    Address size faults, or any fault on a stage-1 walk, give a valid IPA); the model
    omits it. QEMU's value must be the faulting IPA."""
    q, m = compared(ev.qemu), compared(ev.model)
    if "HPFAR_EL2" not in q or "HPFAR_EL2" in m or without_key(q, "HPFAR_EL2") != m:
        return False
    f = facts(ev)
    if f is None or f.fault is None or f.fault.ipaddress is None:
        return False
    fault = f.fault
    return fault.secondstage and not fault.s2fs1walk and fault.statuscode is Fault.PERMISSION \
        and q["HPFAR_EL2"] == hpfar(f.fault.ipaddress)


def hpfar_unknown_for_stage1_abort(ev: OpEvidence) -> bool:
    """A stage-1 abort from EL0 routed to EL2 by HCR_EL2.TGE: HPFAR_EL2 is not written
    (ASL AArch64.Abort writes it only when IPAValid, a stage-2 fault), so its value is
    whatever it held; the harness reads it for every lower-EL abort taken to EL2."""
    q, m = compared(ev.qemu), compared(ev.model)
    if ev.op.el != 0 or "HPFAR_EL2" not in q or "HPFAR_EL2" in m \
            or without_key(q, "HPFAR_EL2") != m or m.get("taken_to") != "EL2":
        return False
    if int(m["ESR"]) & 0x3F == ALIGNMENT_FSC and not int(m["ESR"]) >> 24 & 1:
        return True    # an Alignment fault of the access itself, before any stage 2
    f = facts(ev)
    return f is not None and f.fault is not None and not f.fault.secondstage


def evidence_with_word(ev: OpEvidence, pa: int, value: int) -> OpEvidence | None:
    """Return the op's evidence with one memory word replaced before the case runs: the
    same QEMU answer, the model's answer for the changed memory."""
    source = dict(ev.case.source)
    source["memory"] = list(source.get("memory", [])) + [{"pa": hex(pa), "words": [hex(value)]}]
    return evidence_of_source(ev, source)


def dbm_not_writable_for_fetch(ev: OpEvidence) -> bool:
    """QEMU 7.2 clears a DBM leaf's AP[2] for stores only, so for a fetch the page is not
    writable: WXN and the implicit PXN of EL0-writable memory do not apply. QEMU's answer
    must be the model's with the stage-1 leaf's DBM bit cleared."""
    if ev.op.op != "FETCH" or compared(ev.qemu) == compared(ev.model):
        return False
    f = facts(ev)
    if f is None or f.fault is None or f.fault.secondstage or f.s1_leaf_pa is None \
            or f.fault.statuscode is not Fault.PERMISSION:
        return False
    word = initial_word(ev.case, f.s1_leaf_pa)
    if not word & DBM:
        return False
    changed = evidence_with_word(ev, f.s1_leaf_pa, word & ~DBM)
    if changed is None:
        return False
    if compared(changed.model) == compared(ev.qemu):
        return True
    # With the fetch permitted at stage 1, QEMU's other departures may apply on top (a
    # stage-2 Permission fault's HPFAR_EL2): each checks its own shape.
    return any(d.applies(changed) for d in DIVERGENCES
               if d.applies is not dbm_not_writable_for_fetch)


ALIGNMENT_FSC = 0b100001
DATA_ABORT_ECS = (0x24, 0x25)


def sctlr_a_of(case: HarnessCase, el: int) -> bool:
    """Return SCTLR_ELx.A of the regime an access from el translates in (EL0 with
    HCR_EL2.{E2H,TGE}={1,1} and EL2 use SCTLR_EL2)."""
    hcr = case.regs["HCR_EL2"]
    host = el == 0 and hcr >> 34 & 1 and hcr >> 27 & 1
    sctlr = case.regs["SCTLR_EL2"] if el == 2 or host else case.regs["SCTLR_EL1"]
    return bool(sctlr >> 1 & 1)


def evidence_at(ev: OpEvidence, va: int, qemu: Mapping[str, Any]) -> OpEvidence | None:
    """Return the op's evidence with its address replaced (the ops before it run as
    they did): the model's answer for that address and the given QEMU answer."""
    from s2mmu.arch import atcase

    source = dict(ev.case.source)
    ops = list(source.get("ops", []))[: ev.index + 1]
    op = ops[-1]
    ops[-1] = {**op, "va": hex(va)} if isinstance(op, Mapping) else [op[0], hex(va)]
    source["ops"] = ops
    try:
        answer = atcase.run_case(atcase.parse_cases(source)[0])
        (case,) = parse_cases(source)
    except Exception:  # noqa: BLE001 - an unreadable case explains nothing
        return None
    return OpEvidence(case, case.ops[ev.index], qemu, answer["ops"][ev.index], ev.index)


def data_big_endian_of(case: HarnessCase, el: int) -> bool:
    """Return whether data accesses from el are big-endian (SCTLR_ELx.E0E at EL0,
    SCTLR_ELx.EE otherwise, of the regime's SCTLR)."""
    hcr = case.regs["HCR_EL2"]
    host = el == 0 and hcr >> 34 & 1 and hcr >> 27 & 1
    sctlr = case.regs["SCTLR_EL2"] if el == 2 or host else case.regs["SCTLR_EL1"]
    return bool(sctlr >> (24 if el == 0 else 25) & 1)


def unaligned_load_value(ev: OpEvidence, aligned_va: int, first: int) -> int | None:
    """Return what an unaligned LDR reads, from the model's loads of the two aligned
    words it overlaps (None if the second does not load)."""
    second = evidence_at(ev, aligned_va + 8, ev.qemu)
    if second is None or compared(second.model).get("outcome") != "load":
        return None
    order: Literal["big", "little"] = "big" if data_big_endian_of(ev.case, ev.op.el) else "little"
    region = first.to_bytes(8, order) + int(compared(second.model)["value"]).to_bytes(8, order)
    k = ev.op.va - aligned_va
    return int.from_bytes(region[k:k + 8], order)


def device_alignment_unchecked(ev: OpEvidence) -> bool:
    """QEMU 7.2 takes no Alignment fault for an unaligned LDR/STR to Device memory.

    The model's answer must be a data abort with FSC 0b100001 for an unaligned LDR or
    STR with SCTLR_ELx.A=0 (so the Device memory type, not AlignmentEnforced, made it),
    and QEMU's answer must be the model's answer for the same access at the aligned
    address below (same page, same translation): the same completion, or the same
    exception with FAR at the unaligned address (a load reads the bytes the model's
    loads of the two aligned words hold).
    """
    if ev.op.op not in ("LDR", "STR") or not ev.op.va % 8 or sctlr_a_of(ev.case, ev.op.el):
        return False
    m = compared(ev.model)
    if m.get("outcome") != "exception" or int(m["ESR"]) >> 26 & 0x3F not in DATA_ABORT_ECS \
            or int(m["ESR"]) & 0x3F != ALIGNMENT_FSC:
        return False
    q = compared(ev.qemu)
    aligned_va = ev.op.va & ~7
    if q.get("outcome") == "exception":
        if q.get("FAR") != ev.op.va or int(q["ESR"]) & 0x3F == ALIGNMENT_FSC:
            return False
        twin = evidence_at(ev, aligned_va, {**ev.qemu, "FAR": hex(aligned_va)})
    else:
        if q.get("outcome") != {"LDR": "load", "STR": "store"}[ev.op.op]:
            return False
        twin = evidence_at(ev, aligned_va, ev.qemu)
    if twin is None:
        return False
    t = compared(twin.model)
    if q.get("outcome") != "exception":
        if t.get("outcome") != q["outcome"]:
            return False
        if ev.op.op == "STR":
            return t.get("value") == q.get("value")
        return q.get("value") == unaligned_load_value(ev, aligned_va, int(t["value"]))
    if compared(twin.qemu) == t:
        return True
    # On the aligned twin, QEMU's other departures may apply (the instruction syndrome of
    # a stage-1 abort taken to EL2, HPFAR_EL2 of a stage-2 Permission fault).
    return any(d.applies(twin) for d in DIVERGENCES if d.applies is not device_alignment_unchecked)


ATOMIC_OPS = ("LDADD", "SWP", "CAS")


def evidence_as(ev: OpEvidence, name: str, qemu: Mapping[str, Any]) -> tuple[
        OpEvidence, list[Change]] | None:
    """Return the op's evidence with the op replaced by another access at the same
    address (the ops before it run as they did), and the model's changes of that op."""
    from s2mmu.arch import atcase

    source = dict(ev.case.source)
    ops = list(source.get("ops", []))[: ev.index + 1]
    op = ops[-1]
    ops[-1] = {**op, "op": name} if isinstance(op, Mapping) else [name, op[1]]
    source["ops"] = ops
    try:
        answer = atcase.run_case(atcase.parse_cases(source)[0])
        (case,) = parse_cases(source)
    except Exception:  # noqa: BLE001 - an unreadable case explains nothing
        return None
    changes = sorted((int(str(c["pa"]), 16), int(str(c["before"]), 16), int(str(c["after"]), 16))
                     for c in answer["memory_changes"] if c.get("op") == ev.index)
    return OpEvidence(case, case.ops[ev.index], qemu, answer["ops"][ev.index], ev.index), changes


def is_atomic_write_refusal(answer: Mapping[str, Any]) -> bool:
    """Return whether an answer is a data abort for a Permission fault with WnR=1."""
    m = compared(answer)
    if m.get("outcome") != "exception" or "ESR" not in m:
        return False
    esr = int(m["ESR"])
    return esr >> 26 & 0x3F in DATA_ABORT_ECS and esr >> 2 & 0xF == 0b0011 \
        and bool(esr >> 6 & 1)


def atomic_load_then_store(ev: OpEvidence) -> bool:
    """QEMU 7.2 (one vCPU) executes an FEAT_LSE atomic as a load and then a store, so
    the load's whole translation (stage 2 included) comes before the store's stage-1
    permission check. The model's answer must be a Permission fault on the write
    (WnR=1), and QEMU's the model's answer to a load-exclusive (LDXR: a read with no
    instruction syndrome) at the same address."""
    if ev.op.op not in ATOMIC_OPS or not is_atomic_write_refusal(ev.model):
        return False
    twin = evidence_as(ev, "LDXR", ev.qemu)
    if twin is None:
        return False
    t, q = compared(twin[0].model), compared(ev.qemu)
    if t.get("outcome") != "exception" or q == compared(ev.model):
        return False
    return q == t or any(d.applies(twin[0]) for d in DIVERGENCES
                         if d.applies is not atomic_load_then_store)


def initial_word(case: HarnessCase, pa: int) -> int:
    """Return the little-endian word a case's memory holds at pa before any op."""
    return dict(case.words).get(pa, 0)


# --- Departures QEMU 10.0 has and 7.2 has not ------------------------------------------------

PERMISSION_KIND = 0b0011
SCTLR_WXN, SCTLR_EPAN = 1 << 19, 1 << 57


def s2_ptw_device_fault_level(ev: OpEvidence) -> bool:
    """HCR_EL2.PTW=1 and a stage-1 table in stage-2 Device memory: the stage-2 Permission
    fault on the walk has the level of the stage-2 leaf that mapped it (ASL AArch64.S2Translate
    builds it from the stage-2 walk state); QEMU 10.0 reports level 0. QEMU's answer must be
    the model's with only the level of the FSC changed to 0."""
    q, m = walk_fault_codes(ev.qemu), walk_fault_codes(ev.model)
    if q is None or m is None or q[1] != m[1] or not ev.case.regs["HCR_EL2"] >> 2 & 1:
        return False
    if {k: v for k, v in ev.qemu.items() if k not in ("PAR_EL1", "ESR")} != \
            {k: v for k, v in ev.model.items() if k not in ("PAR_EL1", "ESR")}:
        return False
    (qkind, qlevel), (mkind, mlevel) = fsc_kind_level(q[0]), fsc_kind_level(m[0])
    f = facts(ev)
    if f is None or f.fault is None or f.last is None or f.last.stage != 2:
        return False
    device = s2_memattr_is_device(f.last.raw, f.fwb)
    return (device and qkind == mkind == PERMISSION_KIND and qlevel == 0
            and mlevel == f.fault.level == f.last.level != 0)


def evidence_with_register(ev: OpEvidence, name: str, value: int) -> OpEvidence | None:
    """Return the op's evidence with one register changed: the same QEMU answer, the model's
    answer for that configuration (the case's earlier ops run first, as on QEMU)."""
    source = dict(ev.case.source)
    regs = dict(source.get("regs", {}))
    regs[name] = hex(value)
    source["regs"] = regs
    return evidence_of_source(ev, source)


def evidence_of_source(ev: OpEvidence, source: dict[str, Any]) -> OpEvidence | None:
    """Return the op's evidence for a changed case: the same QEMU answer, the model's answer
    and case for it (the case's earlier ops run first, as on QEMU; None if unreadable)."""
    from s2mmu.arch import atcase

    source["ops"] = list(source.get("ops", []))[: ev.index + 1]
    try:
        answer = atcase.run_case(atcase.parse_cases(source)[0])
        (case,) = parse_cases(source)
    except Exception:  # noqa: BLE001 - an unreadable case explains nothing
        return None
    return OpEvidence(case, case.ops[ev.index], ev.qemu, answer["ops"][ev.index], ev.index,
                      ev.series)


def epan_hides_wxn_on_fetch(ev: OpEvidence) -> bool:
    """With FEAT_PAN3, SCTLR_ELx.EPAN=1 and PSTATE.PAN=1, QEMU 10.0 removes the privileged
    write permission of an EL0-executable location before WXN looks at it (target/arm/ptw.c
    get_S1prot: prot_rw = 0 for `!xn` under EPAN, then `wxn && (prot_rw & PAGE_WRITE)`), so
    a privileged fetch from a location EL1 can write runs. PAN restricts data accesses only:
    a fetch's access descriptor has pan FALSE (ASL CreateAccDescIFetch), so the write
    permission stands and WXN makes it execute-never (AArch64.S1DirectBasePermissions).
    QEMU's answer must be the model's with SCTLR_ELx.WXN cleared."""
    if ev.op.op != "FETCH" or not ev.op.pan or ev.op.el not in (1, 2):
        return False
    name = "SCTLR_EL1" if ev.op.el == 1 else "SCTLR_EL2"
    sctlr = ev.case.regs[name]
    if not sctlr & SCTLR_WXN or not sctlr & SCTLR_EPAN or compared(ev.qemu) == compared(ev.model):
        return False
    fsc = fsc_of_fetch(ev.model)
    if fsc is None or fsc >> 2 != PERMISSION_KIND:
        return False
    without = evidence_with_register(ev, name, sctlr & ~SCTLR_WXN)
    if without is None:
        return False
    if compared(without.model) == compared(ev.qemu):
        return True
    # The fetch then goes on to stage 2, where the series' other departures may apply.
    return any(d.applies(without) for d in DIVERGENCES
               if d.applies is not epan_hides_wxn_on_fetch and has_departure(d, ev.series))


def fsc_of_fetch(answer: Mapping[str, Any]) -> int | None:
    """Return the FSC of a stage-1 Instruction Abort taken to the same EL (EC 0x21)."""
    if answer.get("outcome") != "exception" or "ESR" not in answer:
        return None
    esr = int(str(answer["ESR"]), 16)
    return esr & 0x3F if esr >> 26 & 0x3F == 0x21 else None



DIVERGENCES: tuple[Divergence, ...] = (
    Divergence(
        "par_sh_stage1",
        "PAR_EL1.SH must read 0b10 for Device and Normal Non-cacheable results (Arm ARM "
        "PAR_EL1.SH); QEMU 7.2 does so only for combined two-stage results, and reports the "
        "descriptor's SH (0b00 with the MMU off) for stage-1-only ones (10.0 does not: "
        "QEMU's par_el1_shareability, patch 'target/arm: Adjust PAR_EL1.SH for Device and "
        "Normal-NC memory types', qemu-devel 2023-07-14).",
        sh_for_device_or_nc,
        series=QEMU_7_2,
    ),
    Divergence(
        "par_sh_reserved",
        "A descriptor SH of 0b01 is reserved (CONSTRAINED UNPREDICTABLE, it behaves as a "
        "defined value; KVM's at.c maps it to Non-shareable); QEMU 7.2 copies the reserved "
        "0b01 into PAR_EL1.SH.",
        sh_reserved,
        series=QEMU_7_2_AND_10_0,
    ),
    Divergence(
        "s2_wt_drops_transient",
        "Combining stage 1 Write-Back Transient with stage 2 Write-Through gives Write-Through "
        "with stage 1's allocation hints, transient included (ASL S2CombineS1AttrHints, as "
        "KVM's at.c does); QEMU 7.2 reports Write-Through non-transient.",
        transient_dropped,
        series=QEMU_7_2_AND_10_0,
    ),
    Divergence(
        "block_at_illegal_level",
        "A block descriptor at a level where the granule allows no block (4K level 0 "
        "without DS, 16K level 1 without DS, ...) is invalid and faults; QEMU 7.2 treats it "
        "as a huge block.",
        block_at_illegal_level,
        changes_walk=True,
        series=QEMU_7_2,
    ),
    Divergence(
        "oa_52bit_fields_ignored",
        "A descriptor's high output-address bits (OA[51:48] in bits [15:12] with the 64K "
        "granule and FEAT_LPA, OA[51:50] in bits [9:8] with DS=1) are part of the output "
        "address whatever PS says, so a non-zero value beyond PS is an Address size fault; "
        "QEMU 7.2 reads them only when PS is 52 bits.",
        oa_52bit_fields_ignored,
        changes_walk=True,
        series=QEMU_7_2_AND_10_0,
    ),
    Divergence(
        "s2_start_level_vs_ps",
        "The architecture checks a stage-2 start level against the IPA size and the "
        "implemented PA size (52 bits); QEMU 7.2 checks it against VTCR_EL2.PS (and the IPA "
        "size against PS), and reports a stage-2 Translation fault where the architecture walks.",
        s2_start_level_vs_ps,
        changes_walk=True,
        series=QEMU_7_2,
    ),
    Divergence(
        "s2_walk_fault_level",
        "A stage-2 fault on a stage-1 table walk reports the level of the stage-2 lookup "
        "that faulted (ASL AArch64.S1Walk returns the FaultRecord of AArch64.S2Translate, "
        "whose level the stage-2 walk set; KVM's user_mem_abort relies on it to size the "
        "permission relax of an S1PTW fault); QEMU 7.2 overwrites it with the stage-1 "
        "level (KVM's nested AT emulation in at.c does the same).",
        s2_walk_fault_level,
        series=QEMU_7_2,
    ),
    Divergence(
        "fwb_reserved_memattr",
        "With HCR_EL2.FWB=1 stage-2 MemAttr[3] is ignored and 0b100 is Normal Non-cacheable "
        "unless stage 1 is Device (ASL AArch64.S2ApplyFWBMemAttrs); QEMU 7.2 treats both "
        "as reserved and forces Device-nGnRnE.",
        fwb_reserved_memattr,
        series=QEMU_7_2_AND_10_0,
    ),
    Divergence(
        "fwb_device_not_stricter",
        "With FWB, a stage-2 Device type over a stage-1 Device type gives the stricter of "
        "the two (ASL AArch64.S2ApplyFWBMemAttrs, S2CombineS1Device); QEMU 7.2 reports "
        "stage 2's type.",
        fwb_device_not_stricter,
        series=QEMU_7_2_AND_10_0,
    ),
    Divergence(
        "nofwb_device_with_normal",
        "Without FWB, Device at one stage and Normal at the other gives that Device "
        "attribute (ASL S2CombineS1MemAttrs); QEMU 7.2 reads the Normal side's inner "
        "nibble as a Device type, so inner Non-cacheable (0b0100) becomes Device-nGnRE.",
        nofwb_device_with_normal,
        series=QEMU_7_2_AND_10_0,
    ),
    Divergence(
        "reserved_mair_as_is",
        "A reserved MAIR_ELx attribute encoding is CONSTRAINED UNPREDICTABLE (ASL "
        "S1DecodeMemAttrs: ConstrainUnpredictableBits(RESMAIR)); the model reads it as "
        "its documented ImplChoices.reserved_mair says (the nearest defined encoding). "
        "QEMU 7.2's -cpu max has no FEAT_XS, so the XS=0 encodings (0b0000dd01, 0x40, "
        "0xA0) are reserved there too (with FEAT_XS the model decodes them: "
        "s2mmu.arch.attrs). QEMU 7.2 reports the byte as programmed in PAR_EL1.ATTR "
        "(and combines it as is).",
        reserved_mair_as_is,
        series=QEMU_7_2_AND_10_0,
    ),
    Divergence(
        "s1_off_shareability",
        "With stage 1 off, data output is Device-nGnRnE Outer Shareable (ASL "
        "AArch64.S1DisabledOutput), so combined with stage 2 it stays Outer Shareable; "
        "QEMU 7.2 gives it shareability 0, and a stage-2 Inner Shareable mapping forced "
        "Write-Back under FWB reports SH=0b11 (10.0 does not: get_phys_addr_disabled sets "
        "shareability 2 for data too, patch 'target/arm/ptw: Set attributes correctly for "
        "MMU disabled data accesses', qemu-devel 2023-07-14).",
        s1_off_shareability,
        series=QEMU_7_2,
    ),
    Divergence(
        "tge_keeps_el1_stage1",
        "With HCR_EL2.TGE=1 (E2H=0) SCTLR_EL1.M is treated as 0 for all purposes other than "
        "a direct read, so the EL1&0 stage 1 is disabled (ASL AArch64.S1Enabled: Regime_EL10 "
        "needs HCR_EL2.<DC,TGE> == '00'); QEMU 7.2 still walks it for AT S1E0*, S1E1* and "
        "S12E* executed at EL2 or EL3 (it checks TGE only for its E10 MMU indexes).",
        tge_keeps_el1_stage1,
        changes_walk=True,
        series=QEMU_7_2_AND_10_0,
    ),
    Divergence(
        "isv_on_stage1_abort",
        "The instruction syndrome (ISV, SAS, SSE, SRT, SF, AR) is reported only for a "
        "stage-2 data abort that is not on a stage-1 walk (ASL AArch64.FaultSyndrome: "
        "IsSecondStage(fault) && !fault.s2fs1walk); QEMU 7.2 reports it for every data abort "
        "taken to EL2, a stage-1 fault at EL2 included (target/arm/tlb_helper.c "
        "merge_syn_data_abort tests only target_el == 2 and s1ptw; fixed in QEMU 8.0).",
        isv_for_stage1_abort,
        series=QEMU_7_2,
    ),
    Divergence(
        "hpfar_unknown_s2_permission",
        "HPFAR_EL2 is UNKNOWN for a stage-2 Permission fault on the access itself (ASL "
        "IPAValid), so the model does not report it; QEMU 7.2 writes the faulting IPA "
        "(target/arm/tlb_helper.c arm_deliver_fault sets HPFAR for every stage-2 fault).",
        hpfar_unknown_for_s2_permission,
        series=QEMU_7_2_AND_10_0,
    ),
    Divergence(
        "hpfar_unknown_stage1_abort",
        "HPFAR_EL2 is not written for a stage-1 abort that HCR_EL2.TGE routes from EL0 to "
        "EL2 (ASL AArch64.Abort: only when IPAValid), so the model reports none; QEMU 7.2 "
        "leaves the register as it was (target/arm/tlb_helper.c arm_deliver_fault writes it "
        "only when fi->stage2) and the probe reads it for every lower-EL abort to EL2.",
        hpfar_unknown_for_stage1_abort,
        series=QEMU_7_2_AND_10_0,
    ),
    Divergence(
        "dbm_not_writable_for_fetch",
        "With HA=HD=1 a DBM descriptor's effective AP[2] is 0 for every access (ASL "
        "AArch64.S1ApplyOutputPerms: 'Descriptors marked with DBM set have the effective "
        "value of AP[2] cleared'), so WXN and the implicit PXN of EL0-writable memory apply "
        "to fetches; QEMU 7.2 clears AP[2] only for stores (target/arm/ptw.c "
        "get_phys_addr_lpae: param.hd && DBM && access_type == MMU_DATA_STORE).",
        dbm_not_writable_for_fetch,
        changes_walk=True,
        series=QEMU_7_2_AND_10_0,
    ),
    Divergence(
        "s2_ptw_device_fault_level",
        "With HCR_EL2.PTW=1 a stage-1 table in stage-2 Device memory gives a stage-2 "
        "Permission fault on the walk at the level of the stage-2 leaf that mapped it (ASL "
        "AArch64.S2Translate); QEMU 10.0 reports it at level 0 (7.2 reports the level).",
        s2_ptw_device_fault_level,
        series=QEMU_10_0,
    ),
    Divergence(
        "epan_hides_wxn_on_fetch",
        "PAN restricts data accesses only: a fetch's access descriptor has pan FALSE (ASL "
        "CreateAccDescIFetch), so with WXN a location EL1 can write is execute-never at EL1 "
        "(AArch64.S1DirectBasePermissions). With FEAT_PAN3, SCTLR_ELx.EPAN=1 and PSTATE.PAN=1, "
        "QEMU 10.0 drops the write permission of an EL0-executable location before its WXN "
        "check (target/arm/ptw.c get_S1prot), so the fetch runs.",
        epan_hides_wxn_on_fetch,
        changes_walk=True,
        series=QEMU_10_0,
    ),
    Divergence(
        "device_alignment_unchecked",
        "An unaligned data access to Device memory takes an Alignment fault (FSC 0b100001) "
        "after the walk has found the memory type and before the permission check (ASL "
        "AArch64.S1Translate: AArch64.S1HasAlignmentFault before AArch64.S1CheckPermissions; "
        "AArch64.S2Translate: S2HasAlignmentFault before S2CheckPermissions; "
        "AArch64.S1DisabledOutput for the Device-nGnRnE of stage 1 off). QEMU 7.2 has no "
        "Device alignment check (target/arm/ptw.c sets TLB_CHECK_ALIGNED for Device "
        "memory only from QEMU 9.0): it completes the access, or reports the fault an "
        "aligned access would take. QEMU 10.0 (measured) takes the Alignment fault with "
        "stage 1 off, but with stage 1 on still completes some such accesses and reports "
        "the Permission fault of a refused one before the alignment check.",
        device_alignment_unchecked,
        changes_walk=True,
        series=QEMU_7_2_AND_10_0,
    ),
    Divergence(
        "atomic_load_then_store",
        "An atomic read-modify-write (CreateAccDescAtomicOp: read and write) is one access "
        "whose stage-1 permission check (read, then write) completes before stage 2 "
        "translates it (ASL AArch64.FullTranslate: S1Translate, then S2Translate). QEMU "
        "7.2 with one vCPU executes LDADD/SWP/CAS as a load and then a store (tcg/tcg-op.c "
        "do_nonatomic_op_i64), so a stage-2 fault of the load is taken before stage 1 refuses "
        "the write. QEMU 10.0 (measured) answers the same way.",
        atomic_load_then_store,
        changes_walk=True,
        series=QEMU_7_2_AND_10_0,
    ),
)
"""Every intended divergence; the comparison consults them in this order."""


MEMORY_ATOMIC_LOAD = Divergence(
    "atomic_load_sets_af",
    "Setting the access flag on a Permission fault is CONSTRAINED UNPREDICTABLE (ASL "
    "AArch64.SettingAccessFlagPermitted); the model does not (ImplChoices."
    "af_update_on_permission_fault, QEMU 7.2's choice for loads and stores). An atomic is "
    "one access: stage 1 sets its access flag and dirty state before stage 2 translates it "
    "(ASL AArch64.S1Translate, then S2Translate). QEMU 7.2 (one vCPU, tcg/tcg-op.c "
    "do_nonatomic_op_i64) does a load and then a store, so when the load faults or the "
    "store is refused, its descriptor writes are those of a load at the same address "
    "(QEMU 10.0 too).",
    lambda ev: False,
    series=QEMU_7_2_AND_10_0,
)
"""A memory_changes divergence (it explains an op's changes, not its answer)."""


MEMORY_AT_DIRTY = Divergence(
    "at_sets_dirty",
    "AT instructions set the access flag but never the dirty state (ASL AArch64.S1Translate "
    "and S2Translate exclude AccessType_AT from the dirty-state update); QEMU 7.2's AT "
    "*W performs it (target/arm/ptw.c get_phys_addr_lpae: with param.hd, DBM and "
    "access_type == MMU_DATA_STORE it clears AP[2] of a stage-1 leaf and sets S2AP[1] of "
    "a stage-2 leaf; do_ats_write passes MMU_DATA_STORE for AT *W).",
    lambda ev: False,
    series=QEMU_7_2_AND_10_0,
)
"""A memory_changes divergence (it explains an op's changes, not its answer)."""

DBM, AP2 = 1 << 51, 1 << 7

Change = tuple[int, int, int]


def undo_dirty(change: Change, s1_leaf: int | None, s2_leaf: int | None) -> Change | None:
    """Return a change without QEMU's dirty-state update of the op's own leaf.

    On the stage-1 leaf the update clears AP[2]; on the stage-2 leaf it sets S2AP[1]
    (bit 7 both). Any other word, or any other bit flip, is returned as is.
    """
    pa, before, after = change
    if not before & DBM:
        return change
    if pa == s1_leaf and before & AP2 and not after & AP2:
        after |= AP2
    elif pa == s2_leaf and not before & AP2 and after & AP2:
        after &= ~AP2
    return None if after == before else (pa, before, after)


def explain_memory(ev: OpEvidence, qemu: list[Change], model: list[Change],
                   series: str = "7.2") -> Divergence | None:
    """Return the divergence that explains one op's different descriptor writes, or None.

    Only an AT *W op, and only its own leaves (where the model's walk of the op found
    them): QEMU's changes with those dirty-state updates undone must be exactly the
    model's.
    """
    if ev.op.op in ATOMIC_OPS and compared(ev.qemu).get("outcome") == "exception":
        # QEMU's load ended the op (its fault, or the store's refusal after it): its
        # writes must be exactly those of a load-exclusive at the same address.
        if not has_departure(MEMORY_ATOMIC_LOAD, series):
            return None
        twin = evidence_as(ev, "LDXR", ev.qemu)
        if twin is None or twin[1] != sorted(qemu) or sorted(qemu) == sorted(model):
            return None
        load_faulted = compared(twin[0].model) == compared(ev.qemu) or any(
            d.applies(twin[0]) for d in DIVERGENCES if has_departure(d, series))
        return MEMORY_ATOMIC_LOAD if load_faulted or is_atomic_write_refusal(ev.model) \
            else None
    if not ev.op.op.rstrip("P").endswith("W") or not has_departure(MEMORY_AT_DIRTY, series):
        return None
    f = facts(ev)
    if f is None:
        return None
    undone = sorted(c for c in (undo_dirty(x, f.s1_leaf_pa, f.s2_leaf_pa) for x in qemu)
                    if c is not None)
    if undone != sorted(qemu) and undone == sorted(model):
        return MEMORY_AT_DIRTY
    return None


def classify(evidence: OpEvidence, series: str = "7.2") -> Divergence | None:
    """Return the intended divergence of QEMU `series` that explains a difference, or None."""
    for divergence in DIVERGENCES:
        if has_departure(divergence, series) and divergence.applies(evidence):
            return divergence
    return None


def divergence_named(name: str) -> Divergence:
    """Return the divergence with this name."""
    for divergence in (*DIVERGENCES, MEMORY_AT_DIRTY):
        if divergence.name == name:
            return divergence
    raise KeyError(name)
