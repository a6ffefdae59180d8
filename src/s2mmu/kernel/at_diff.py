"""Drive the kernel's at.c and the model's nested AT emulation on the same random guests.

Each case is one random guest hypervisor (L1) state and one AT instruction it executes
at virtual EL2: L1's HCR_EL2, SCTLR/TCR/TTBR/MAIR of EL1 and EL2, VTCR/VTTBR of its
stage 2, PSTATE.PAN, the VM's features, and stage-1 and stage-2 tables in guest memory
with a few random mappings (pages and blocks, permissions, access flags, table
attributes, contiguous hints, holes), a VA near a mapping or anywhere.

Both sides see the same guest: the kernel's at.c reads guest memory, walks L1's stage 2
and asks for features through callbacks answered by the model (s2mmu.nested.guest,
kvm_walk_nested_s2, the FeatureSet), so what is compared is at.c's own logic: regime,
walk set-up, the stage-1 walk, permissions, PAR_EL1 (compute_par_s1, compute_par_s12).
The hardware fast path is absent on both sides (the kernel's: no shadow MMU and
__kvm_at fails; the model's: an AtContext with no shadow and no canonical stage 2), so
both take the software walk. Compared per case: PAR_EL1, and the descriptor updates (6.12's at.c
makes none: it has no __kvm_at_swap_desc; the model under the v6.12 AT profile must
make none either).

The first runs found five differences; each is now the model's: the slow path takes a
contiguous run's output bits from the VA (AT_CHOICES.contiguous_oa_from_ia, a model
bug fixed), and four 6.12 behaviours are knobs of the v6.12 AT profile
(AtProfile.s1_af_checked, ptw_on_s1_walk_fault, s12_needs_e2h, fwb_device_nGnRnE).
Under the current AT profile those four show again.

Kernel: arch/arm64/kvm/at.c (6.12): __kvm_at_s1e01, __kvm_at_s1e2, __kvm_at_s12,
handle_at_slow, setup_s1_walk, walk_s1, compute_par_s1, compute_par_s12.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from s2mmu.arch.at import AtOp
from s2mmu.arch.builder import BumpAllocator, TableBuilder, s1_attrs, s2_attrs
from s2mmu.arch.features import qemu_7_2_max
from s2mmu.arch.memory import ExternalAbort, PhysMem
from s2mmu.arch.params import Granule
from s2mmu.arch.registers import HCR_EL2, SCTLR_EL1, TCR_EL1, TCR_EL2_E2H0, VTCR_EL2
from s2mmu.arch.state import SysRegs
from s2mmu.kernel.at_binding import EFAULT, SYSREGS, GuestCallbacks, KernelAt, S2Answer
from s2mmu.nested.at import V6_12, AtContext, AtProfile, kvm_at
from s2mmu.nested.guest import GuestMemory, GuestRegion
from s2mmu.nested.nested import NestedVm, NestedWalkError, kvm_walk_nested_s2

S1_EL1_TABLES, S1_EL2_TABLES, S2_TABLES = 0x1000_0000, 0x1800_0000, 0x2000_0000
GUEST_SIZE = 1 << 36
IPA_BASE, PA_BASE = 0x8000_0000, 0x2_0000_0000
MAIRS = (0xFF, 0x44, 0x04, 0x00, 0xAA, 0x4F, 0x0C, 0xF0, 0xBB, 0x08)
KVM_FEATURES = ("FEAT_PAN3", "FEAT_HPDS", "FEAT_E0PD", "FEAT_TTST")

# kvm_has_feat(kvm, REG, FIELD, VALUE) as at.c (6.12) asks it, and the feature it means.
FEATURE_QUESTIONS = {
    ("ID_AA64MMFR1_EL1", "HPDS", "IMP"): "FEAT_HPDS",
    ("ID_AA64MMFR2_EL1", "ST", "48_47"): "FEAT_TTST",
    ("ID_AA64MMFR0_EL1", "TGRAN4", "52_BIT"): "FEAT_LPA2",
    ("ID_AA64MMFR0_EL1", "TGRAN16", "52_BIT"): "FEAT_LPA2",
    ("ID_AA64MMFR2_EL1", "VARange", "52"): "FEAT_LVA",
    ("ID_AA64MMFR2_EL1", "E0PD", "IMP"): "FEAT_E0PD",
    ("ID_AA64MMFR1_EL1", "PAN", "PAN3"): "FEAT_PAN3",
    ("ID_AA64PFR2_EL1", "MTEPERM", "IMP"): "FEAT_MTE_PERM",
}


class RecordingGuest(GuestMemory):
    """Guest memory that records every descriptor update (__kvm_at_swap_desc)."""

    def __init__(self, host: PhysMem, regions: tuple[GuestRegion, ...]) -> None:
        super().__init__(host, regions)
        self.updates: list[tuple[int, int, int]] = []

    def cas64(self, pa: int, expected: int, new: int,
              big_endian: bool = False) -> bool | ExternalAbort:
        """Swap and record (pa, expected, new)."""
        self.updates.append((pa, expected, new))
        return super().cas64(pa, expected, new, big_endian)


@dataclass
class AtCase:
    """One random L1 state and AT instruction (number index of the run's seed)."""

    index: int
    op: AtOp
    va: int
    pan: bool
    regs: SysRegs
    vm: NestedVm
    guest: RecordingGuest

    def describe(self) -> str:
        """Return the case as text: op, VA, PAN, features and the registers at.c reads."""
        regs = " ".join(f"{n}={getattr(self.regs, n):#x}" for n in SYSREGS if n != "PAR_EL1")
        feats = ",".join(f for f in KVM_FEATURES if self.vm.fs.has(f)) or "-"
        return (f"AT {self.op.name} {self.va:#x} PAN={int(self.pan)} features={feats} "
                f"{regs}")


def _start_level(g: Granule, ia_bits: int) -> int:
    return 3 - (ia_bits - 1 - g.bits) // g.stride


# TCR_ELx.TG0 encodings; 0b11 is reserved (KVM and the model read it as 64KB).
TG0 = ((Granule.G4K, 0b00), (Granule.G16K, 0b10), (Granule.G64K, 0b01), (Granule.G64K, 0b11))


def random_case(seed: int, index: int) -> AtCase:
    """Return case index of a run with seed (the same pair always gives the same case)."""
    rng = random.Random(f"at:{seed}:{index}")
    fs = qemu_7_2_max().with_features("FEAT_ATS1A", *(
        f for f in KVM_FEATURES if rng.random() < 0.5), remove=tuple(
        f for f in ("FEAT_HPDS", "FEAT_E0PD", "FEAT_TTST") if rng.random() < 0.3))
    host = PhysMem()
    guest = RecordingGuest(host, (GuestRegion(0, GUEST_SIZE, 0),))
    vm = NestedVm(fs, 48, host, guest)
    e2h, tge = rng.random() < 0.5, rng.random() < 0.3
    hcr = HCR_EL2.encode(RW=1, VM=int(rng.random() < 0.8), DC=int(rng.random() < 0.1),
                         E2H=int(e2h), TGE=int(tge), FWB=int(rng.random() < 0.3),
                         CD=int(rng.random() < 0.15))
    # The one memslot maps guest PA x at host PA x: tables are laid out in host memory.
    s2 = TableBuilder(host, BumpAllocator(S2_TABLES, S2_TABLES + (16 << 20)), Granule.G4K,
                      40, 1)
    s2.map(S1_EL1_TABLES, S1_EL1_TABLES, 2 << 20, s2_attrs(), level=2)
    big = rng.random() < 0.1
    el1, tcr1, va1 = _random_s1(rng, host, S1_EL1_TABLES, big, two_ranges=True)
    el2, tcr2, va2 = _random_s1(rng, host, S1_EL2_TABLES, big, two_ranges=e2h)
    _random_s2(rng, s2)
    sctlr = [SCTLR_EL1.encode(M=int(rng.random() < 0.9), C=int(rng.random() < 0.8), I=1,
                              EE=int(big), EPAN=int(rng.random() < 0.5)) | 0x30D00800
             for _ in range(2)]
    mair = [sum(rng.choice(MAIRS) << (8 * i) for i in range(8)) for _ in range(2)]
    regs = replace(SysRegs(), HCR_EL2=hcr, SCTLR_EL1=sctlr[0], TCR_EL1=tcr1,
                   TTBR0_EL1=el1.root, TTBR1_EL1=0, MAIR_EL1=mair[0], SCTLR_EL2=sctlr[1],
                   TCR_EL2=tcr2, TTBR0_EL2=el2.root, TTBR1_EL2=0, MAIR_EL2=mair[1],
                   VTCR_EL2=VTCR_EL2.encode(T0SZ=24, SL0=1, TG0=0, SH0=3, ORGN0=1, IRGN0=1,
                                            PS=0b010),
                   VTTBR_EL2=s2.root)
    op = rng.choice(list(AtOp))
    regime_el2 = op.el == 2 or (e2h and tge)
    va = _random_va(rng, va2 if regime_el2 else va1)
    return AtCase(index, op, va, rng.random() < 0.5, regs, vm, guest)


def _random_s1(rng: random.Random, host: PhysMem, base: int, big: bool,
               two_ranges: bool) -> tuple[TableBuilder, int, int]:
    """Return stage-1 tables with a few mappings, their TCR value and a mapped VA.

    Granules 4KB (most), 16KB, 64KB and the reserved TG0 encoding; blocks where the
    granule allows them and, now and then, where it does not.
    """
    g, tg0 = rng.choices(TG0, weights=(60, 17, 17, 6))[0]
    t0sz = rng.choice((16, 16, 25, 25, 30, 39, 40, 12))
    ia_bits = min(64 - t0sz, 48)
    sl = max(_start_level(g, ia_bits), 0)
    b = TableBuilder(host, BumpAllocator(base, base + (8 << 20)), g, ia_bits, sl,
                     big_endian=big)
    va = rng.randrange(1 << ia_bits) & ~0xFFF
    for _ in range(rng.randint(1, 3)):
        blocks = (1, 2) if g is Granule.G4K or rng.random() < 0.05 else (2,)
        level = rng.choice([lvl for lvl in (*blocks, 3, 3) if lvl >= sl] or [3])
        size = g.block_size(level)
        ia = va // size * size
        oa = (IPA_BASE + rng.randrange(4) * (1 << 30)) // size * size
        attrs = s1_attrs(attrindx=rng.randrange(8), ro=rng.random() < 0.3,
                         el0=rng.random() < 0.4, pxn=rng.random() < 0.3,
                         uxn=rng.random() < 0.3, af=rng.random() < 0.85,
                         sh=rng.choice((0, 1, 2, 3))) | (rng.random() < 0.1) << 52
        table_attrs = rng.choice((0, 0, 0, 1 << 61, 1 << 62, 3 << 61, 1 << 60, 1 << 59))
        b.map(ia, oa, size, attrs, level=level, table_attrs=table_attrs)
        if rng.random() < 0.1:
            b.set_entry(ia, level, 0)
        va = ia + rng.randrange(size) & ~0xFFF if rng.random() < 0.7 else va
    if two_ranges:
        tcr = TCR_EL1.encode(T0SZ=t0sz, TG0=tg0, SH0=3, ORGN0=1, IRGN0=1, T1SZ=16, TG1=2,
                             EPD1=1, IPS=rng.choice((0b000, 0b010, 0b101, 0b101)),
                             TBI0=int(rng.random() < 0.3), HPD0=int(rng.random() < 0.3),
                             EPD0=int(rng.random() < 0.05), E0PD0=int(rng.random() < 0.2))
    else:
        tcr = TCR_EL2_E2H0.encode(T0SZ=t0sz, TG0=tg0, SH0=3, ORGN0=1, IRGN0=1,
                                  PS=rng.choice((0b000, 0b010, 0b101, 0b101)),
                                  TBI=int(rng.random() < 0.3),
                                  HPD=int(rng.random() < 0.3)) | 0x80800000
    return b, tcr, va + rng.randrange(0x1000)


def _random_s2(rng: random.Random, s2: TableBuilder) -> None:
    """Map the stage-1 outputs (IPA_BASE and 3 GB above) at L1's stage 2, at random."""
    for gb in range(4):
        if rng.random() < 0.15:
            continue
        level = rng.choice((1, 2, 3))
        size = Granule.G4K.block_size(level)
        count = 1 if level == 1 else rng.randint(1, 4)
        ipa = IPA_BASE + gb * (1 << 30)
        for i in range(count):
            s2.map(ipa + i * size, PA_BASE + gb * (1 << 30) + i * size, size,
                   s2_attrs(memattr=rng.randrange(16), s2ap=rng.randrange(4),
                            af=rng.random() < 0.9, sh=rng.choice((0, 2, 3))), level=level)
    if rng.random() < 0.3:   # the stage-1 tables' own mapping may be restricted
        s2.set_entry(S1_EL1_TABLES, 2, S1_EL1_TABLES | s2_attrs(
            s2ap=rng.randrange(4), af=rng.random() < 0.7) | 1)


def _random_va(rng: random.Random, near: int) -> int:
    """Return a VA near a mapping, with a tag or bit 55 at times, or anywhere."""
    r = rng.random()
    if r < 0.75:
        return near
    if r < 0.85:
        return near | rng.randrange(256) << 56
    if r < 0.9:
        return near | 1 << 55 | 0xFF << 56
    return rng.randrange(1 << 64)


# ---------------------------------------------------------------------------------------
# The two sides.


def model_par(case: AtCase, profile: AtProfile = V6_12) -> int:
    """Return the model's PAR_EL1 for the case, through its software walk."""
    ctx = AtContext(case.vm, profile, None, None)
    got = kvm_at(ctx, case.regs, case.pan, case.op, case.va)
    if got.path != "slow":
        raise RuntimeError(f"case {case.index}: the model took its {got.path} path")
    return got.par


def callbacks(case: AtCase) -> GuestCallbacks:
    """Return the kernel side's view of the case's VM, answered by the model."""

    def read(gpa: int) -> int | None:
        v = case.guest.read64(gpa)
        return None if isinstance(v, ExternalAbort) else v

    def walk_s2(ipa: int) -> S2Answer:
        t = kvm_walk_nested_s2(case.vm, case.regs, ipa)
        if isinstance(t, NestedWalkError):
            return S2Answer(-EFAULT)
        return S2Answer(1 if t.esr else 0, t.output, t.block_size, t.readable, t.writable,
                        t.level, t.esr, t.desc)

    def has_feat(reg: str, fld: str, limit: str, exact: bool) -> bool:
        name = FEATURE_QUESTIONS.get((reg, fld, limit))
        if name is None:
            raise KeyError(f"kvm_has_feat({reg}, {fld}, {limit}) is not mapped to a feature")
        return case.vm.fs.has(name)

    return GuestCallbacks(read, walk_s2, has_feat)


def kernel_par(k: KernelAt, case: AtCase) -> int:
    """Return the kernel's PAR_EL1 for the case."""
    k.set_guest(callbacks(case), case.vm.fs.pa_max(), case.vm.ipa_limit)
    k.set_regs({n: getattr(case.regs, n) for n in SYSREGS if n != "PAR_EL1"}, case.pan)
    return k.at(case.op, case.va)


@dataclass(frozen=True)
class AtDifference:
    """A case on which the two sides disagreed."""

    case: str
    index: int
    what: str
    kernel: str
    model: str


@dataclass(frozen=True)
class AtDiffReport:
    """A whole run: cases compared and agreed, per AT instruction, and the differences."""

    seed: int
    profile: str
    compared: int
    agreed: int
    differences: tuple[AtDifference, ...]
    by_op: dict[str, int] = field(default_factory=dict)

    @property
    def agreement(self) -> float:
        """Return the agreement in percent."""
        return 100.0 * self.agreed / self.compared if self.compared else 100.0


def compare_case(k: KernelAt, case: AtCase, profile: AtProfile = V6_12) -> AtDifference | None:
    """Run one case on both sides; return the difference, or None."""
    errors = len(k.errors)
    kpar = kernel_par(k, case)
    if len(k.errors) > errors:
        return AtDifference(case.describe(), case.index, "harness callback failed",
                            k.errors[-1], "")
    mpar = model_par(case, profile)
    if kpar != mpar:
        return AtDifference(case.describe(), case.index, "PAR_EL1", f"{kpar:#x}", f"{mpar:#x}")
    if case.guest.updates:
        return AtDifference(case.describe(), case.index, "descriptor updates", "[]",
                            str([f"{pa:#x}: {new:#x}" for pa, _, new in case.guest.updates]))
    return None


def run_at_diff(k: KernelAt, *, cases: int, seed: int, profile: AtProfile = V6_12,
                only: int | None = None,
                advance: Callable[[int], None] | None = None) -> AtDiffReport:
    """Compare cases random cases (or only case number only) of seed."""
    found: list[AtDifference] = []
    by_op: dict[str, int] = {}
    indices = [only] if only is not None else range(cases)
    agreed = 0
    for i in indices:
        case = random_case(seed, i)
        d = compare_case(k, case, profile)
        if d is None:
            agreed += 1
            by_op[case.op.name] = by_op.get(case.op.name, 0) + 1
        else:
            found.append(d)
        if advance is not None:
            advance(1)
    return AtDiffReport(seed, profile.name, len(indices), agreed, tuple(found), by_op)

