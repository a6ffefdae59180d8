"""The one list of intended divergences between the model and QEMU 7.2, with reasons.

The model follows the Arm ARM; where QEMU 7.2 (`-cpu max`, Debian 12) departs from it,
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
from typing import Any

from s2mmu.conformance.casefile import AtOp, HarnessCase

PS_BITS = (32, 36, 40, 42, 44, 48, 52, 52)
PAMAX = 52

TAG_ILLEGAL_BLOCK = "illegal_block"
TAG_OA_52BIT_FIELDS = "oa_52bit_fields"


@dataclass(frozen=True)
class OpEvidence:
    """One op and both answers, with the case it came from."""

    case: HarnessCase
    op: AtOp
    qemu: Mapping[str, Any]
    model: Mapping[str, Any]

    @property
    def tags(self) -> frozenset[str]:
        """Return the generator's divergence tags for the case (`divergence_tags`)."""
        return frozenset(self.case.source.get("divergence_tags", ()))


@dataclass(frozen=True)
class Divergence:
    """An intended divergence: its name, why, and when it explains a difference."""

    name: str
    reason: str
    applies: Callable[[OpEvidence], bool]


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


def block_at_illegal_level(ev: OpEvidence) -> bool:
    """QEMU takes a block descriptor at any level above 3; the model faults (Translation)."""
    if TAG_ILLEGAL_BLOCK not in ev.tags:
        return False
    fault = fsc_of(ev.model)
    above_level_3 = fault is not None and fault[1] != 0b000111
    return fault is not None and is_translation_fault(fault[1]) and above_level_3 \
        and dict(ev.qemu) != dict(ev.model)


# --- 52-bit output-address fields ---------------------------------------------------------


def oa_52bit_fields_ignored(ev: OpEvidence) -> bool:
    """QEMU ignores OA[51:48] (64K, bits [15:12]) and OA[51:50] (DS, bits [9:8]) below PS 52."""
    if TAG_OA_52BIT_FIELDS not in ev.tags:
        return False
    fault = fsc_of(ev.model)
    return fault is not None and is_address_size_fault(fault[1]) and dict(ev.qemu) != dict(ev.model)


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


DIVERGENCES: tuple[Divergence, ...] = (
    Divergence(
        "par_sh_stage1",
        "PAR_EL1.SH must read 0b10 for Device and Normal Non-cacheable results (Arm ARM "
        "PAR_EL1.SH); QEMU 7.2 does so only for combined two-stage results, and reports the "
        "descriptor's SH (0b00 with the MMU off) for stage-1-only ones.",
        sh_for_device_or_nc,
    ),
    Divergence(
        "par_sh_reserved",
        "A descriptor SH of 0b01 is reserved (CONSTRAINED UNPREDICTABLE, it behaves as a "
        "defined value; KVM's at.c maps it to Non-shareable); QEMU 7.2 copies the reserved "
        "0b01 into PAR_EL1.SH.",
        sh_reserved,
    ),
    Divergence(
        "s2_wt_drops_transient",
        "Combining stage 1 Write-Back Transient with stage 2 Write-Through gives Write-Through "
        "with stage 1's allocation hints, transient included (ASL S2CombineS1AttrHints, as "
        "KVM's at.c does); QEMU 7.2 reports Write-Through non-transient.",
        transient_dropped,
    ),
    Divergence(
        "block_at_illegal_level",
        "A block descriptor at a level where the granule allows no block (4K level 0 "
        "without DS, 16K level 1 without DS, ...) is invalid and faults; QEMU 7.2 treats it "
        "as a huge block.",
        block_at_illegal_level,
    ),
    Divergence(
        "oa_52bit_fields_ignored",
        "A descriptor's high output-address bits (OA[51:48] in bits [15:12] with the 64K "
        "granule and FEAT_LPA, OA[51:50] in bits [9:8] with DS=1) are part of the output "
        "address whatever PS says, so a non-zero value beyond PS is an Address size fault; "
        "QEMU 7.2 reads them only when PS is 52 bits.",
        oa_52bit_fields_ignored,
    ),
    Divergence(
        "s2_start_level_vs_ps",
        "The architecture checks a stage-2 start level against the IPA size and the "
        "implemented PA size (52 bits); QEMU 7.2 checks it against VTCR_EL2.PS (and the IPA "
        "size against PS), and reports a stage-2 Translation fault where the architecture walks.",
        s2_start_level_vs_ps,
    ),
)
"""Every intended divergence; the comparison consults them in this order."""


def classify(evidence: OpEvidence) -> Divergence | None:
    """Return the intended divergence that explains a difference, or None."""
    for divergence in DIVERGENCES:
        if divergence.applies(evidence):
            return divergence
    return None


def divergence_named(name: str) -> Divergence:
    """Return the divergence with this name."""
    for divergence in DIVERGENCES:
        if divergence.name == name:
            return divergence
    raise KeyError(name)
