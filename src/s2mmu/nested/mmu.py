"""Shadow stage-2 MMUs for a guest hypervisor, their lookup, recycling and invalidation.

A VM whose guest hypervisor (L1) runs L2 guests keeps a pool of shadow stage 2s,
S2_MMU_PER_VCPU per vCPU. When a vCPU enters L2, it takes the shadow whose key matches
L1's registers: with L1's stage 2 on (HCR_EL2.VM), L1's VTTBR_EL2 without CnP and its
VTCR_EL2; with it off, L1's VMID alone. With no match, the next unused shadow (round
robin) is recycled: its key is replaced and an unmap is left pending, done on the
vCPU's next request check. KVM's fault path fills a shadow with the composition of
L1's stage 2 (walked in software) and KVM's own; L1's TLBIs empty it again.

Differences from the kernel, by choice of scope: shadows are built with the VM's IPA size
(the kernel uses kvm_get_pa_bits, the PARange L1 sees); a put always drops the vCPU's
reference (the kernel keeps it when the vCPU is only scheduled out, not in WFI).

Kernel: arch/arm64/kvm/nested.c (S2_MMU_PER_VCPU, kvm_vcpu_init_nested,
kvm_init_nested_s2_mmu, lookup_s2_mmu, get_s2_mmu_nested, kvm_vcpu_load_hw_mmu,
kvm_vcpu_put_hw_mmu, check_nested_vcpu_requests, kvm_s2_mmu_iterate_by_vmid,
compute_tlb_inval_range, get_guest_mapping_ttl, ttl_to_size),
arch/arm64/kvm/sys_regs.c (handle_vmalls12e1is, handle_ipas2e1is, s2_mmu_unmap_ipa,
handle_ripas2e1is, s2_mmu_unmap_range, handle_tlbi_el1, kvm_supported_tlbi_ipas2_op),
arch/arm64/kvm/mmu.c (kvm_handle_guest_abort's nested branch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from s2mmu.arch.state import SysRegs
from s2mmu.kvm.abort import GuestAbort
from s2mmu.kvm.fault import (
    KVM_NV_GUEST_MAP_SZ,
    AbortOutcome,
    FaultHooks,
    NestedS2Walker,
    kvm_handle_guest_abort,
)
from s2mmu.kvm.vm import Kvm, KvmVcpu
from s2mmu.nested.nested import NestedVm, NestedWalkError, kvm_walk_nested_s2
from s2mmu.pgtable.env import new_stage2
from s2mmu.pgtable.pte import kvm_pte_valid
from s2mmu.pgtable.s2trans import KvmS2Trans
from s2mmu.pgtable.stage2 import kvm_pgtable_stage2_unmap
from s2mmu.pgtable.table import KvmPgtable
from s2mmu.pgtable.walk import kvm_pgtable_get_leaf

S2_MMU_PER_VCPU = 2
"""Shadow stage 2s per vCPU. Kernel: S2_MMU_PER_VCPU."""

VTTBR_CNP_BIT = 1
"""VTTBR_EL2.CnP: ignored when matching, and the 'invalid' mark of an unused shadow."""

HCR_VM = 1 << 0
"""HCR_EL2.VM: L1's stage 2 is enabled."""

SZ_4K, SZ_16K, SZ_64K = 1 << 12, 1 << 14, 1 << 16
SZ_2M, SZ_32M, SZ_512M, SZ_1G = 1 << 21, 1 << 25, 1 << 29, 1 << 30


def get_vmid(vttbr: int) -> int:
    """Return VTTBR_EL2.VMID (16 bits). Kernel: get_vmid."""
    return vttbr >> 48 & 0xFFFF


@dataclass
class NestedMmu:
    """One shadow stage 2 and its key (struct kvm_s2_mmu for a nested context).

    tlb_vttbr with CnP set marks a shadow never used (kvm_init_nested_s2_mmu).
    """

    pgt: KvmPgtable
    tlb_vttbr: int = VTTBR_CNP_BIT
    tlb_vtcr: int = 0
    nested_stage2_enabled: bool = False
    refcnt: int = 0
    pending_unmap: bool = False


def kvm_s2_mmu_valid(mmu: NestedMmu) -> bool:
    """Return whether the shadow holds a key. Kernel: kvm_s2_mmu_valid."""
    return not mmu.tlb_vttbr & VTTBR_CNP_BIT


@dataclass
class NestedKvm:
    """KVM's nested state of one VM: the VM, L1's view, the shadow pool.

    Kernel: kvm->arch.nested_mmus, nested_mmus_size, nested_mmus_next.
    """

    kvm: Kvm
    vm: NestedVm
    mmus: list[NestedMmu] = field(default_factory=list)
    nested_mmus_next: int = 0


def kvm_vcpu_init_nested(nk: NestedKvm) -> None:
    """Grow the shadow pool to S2_MMU_PER_VCPU per vCPU; register the shadows with the VM.

    Kernel: kvm_vcpu_init_nested, kvm_init_nested_s2_mmu.
    """
    kvm = nk.kvm
    while len(nk.mmus) < len(kvm.vcpus) * S2_MMU_PER_VCPU:
        pgt = new_stage2(kvm.env, kvm.ipa_bits, vmid=len(nk.mmus) + 2)
        nk.mmus.append(NestedMmu(pgt))
        kvm.nested_mmus.append(pgt)


def lookup_s2_mmu(nk: NestedKvm, regs: SysRegs) -> NestedMmu | None:
    """Return the shadow whose key matches L1's registers, if any.

    Stage 2 on: the full VTTBR_EL2 (without CnP) and VTCR_EL2 among stage-2-on
    shadows; off: the VMID alone among stage-2-off shadows.

    Kernel: lookup_s2_mmu.
    """
    vttbr = regs.VTTBR_EL2 & ~VTTBR_CNP_BIT
    enabled = bool(regs.HCR_EL2 & HCR_VM)
    for mmu in nk.mmus:
        if not kvm_s2_mmu_valid(mmu) or mmu.nested_stage2_enabled != enabled:
            continue
        if enabled and vttbr == mmu.tlb_vttbr and regs.VTCR_EL2 == mmu.tlb_vtcr:
            return mmu
        if not enabled and get_vmid(vttbr) == get_vmid(mmu.tlb_vttbr):
            return mmu
    return None


def get_s2_mmu_nested(nk: NestedKvm, regs: SysRegs) -> NestedMmu:
    """Return the shadow for L1's registers, recycling an unused one round robin.

    A recycled shadow that held a key gets pending_unmap; it keeps its tables until
    the vCPU's request check empties them.

    Kernel: get_s2_mmu_nested.
    """
    mmu = lookup_s2_mmu(nk, regs)
    if mmu is None:
        size = len(nk.mmus)
        i = nk.nested_mmus_next
        for i in range(nk.nested_mmus_next, nk.nested_mmus_next + size):
            if nk.mmus[i % size].refcnt == 0:
                break
        mmu = nk.mmus[i % size]
        if mmu.refcnt:
            raise RuntimeError("no unused shadow stage 2 (more in use than vCPUs x 2)")
        nk.nested_mmus_next = (i + 1) % size
        if kvm_s2_mmu_valid(mmu):
            mmu.pending_unmap = True
        mmu.tlb_vttbr = regs.VTTBR_EL2 & ~VTTBR_CNP_BIT
        mmu.tlb_vtcr = regs.VTCR_EL2
        mmu.nested_stage2_enabled = bool(regs.HCR_EL2 & HCR_VM)
    mmu.refcnt += 1
    return mmu


def check_nested_vcpu_requests(nk: NestedKvm, mmu: NestedMmu) -> bool:
    """Do a pending unmap of the shadow; return whether one was done.

    Kernel: check_nested_vcpu_requests (KVM_REQ_NESTED_S2_UNMAP).
    """
    if not mmu.pending_unmap:
        return False
    kvm_pgtable_stage2_unmap(mmu.pgt, 0, 1 << mmu.pgt.ia_bits)
    mmu.pending_unmap = False
    return True


def kvm_vcpu_load_hw_mmu(nk: NestedKvm, vcpu: KvmVcpu, regs: SysRegs) -> NestedMmu:
    """Enter L2: make the shadow for L1's registers the vCPU's current stage 2.

    A vCPU that kept its shadow since the last put keeps rolling with it (no new
    lookup, no new reference).

    Kernel: kvm_vcpu_load_hw_mmu (not in a hyp context), then the request check.
    """
    kept = current_mmu(nk, vcpu)
    if kept is not None:
        return kept
    mmu = get_s2_mmu_nested(nk, regs)
    vcpu.hw_mmu = mmu.pgt
    check_nested_vcpu_requests(nk, mmu)
    return mmu


def kvm_vcpu_put_hw_mmu(nk: NestedKvm, vcpu: KvmVcpu) -> None:
    """Leave L2: drop the reference on the shadow, back to the canonical stage 2.

    Kernel: kvm_vcpu_put_hw_mmu.
    """
    for mmu in nk.mmus:
        if vcpu.hw_mmu is mmu.pgt:
            mmu.refcnt -= 1
    vcpu.hw_mmu = None


def nested_s2_walker(nk: NestedKvm, regs: SysRegs) -> NestedS2Walker:
    """Return the walk of L1's stage 2 that KVM's fault path calls for an L2 IPA.

    A walk KVM refuses (L1's VTCR_EL2 outside what it walks, a table outside guest
    memory) comes back as the NestedWalkError value: the fault path injects it into L1
    as kvm_handle_guest_abort does with any non-zero return of kvm_walk_nested_s2.

    Kernel: kvm_walk_nested_s2.
    """
    def walk(gipa: int) -> KvmS2Trans | NestedWalkError:
        return kvm_walk_nested_s2(nk.vm, regs, gipa)
    return walk


def current_mmu(nk: NestedKvm, vcpu: KvmVcpu) -> NestedMmu | None:
    """Return the shadow the vCPU runs on, or None on the canonical stage 2."""
    return next((m for m in nk.mmus if m.pgt is vcpu.hw_mmu), None)


def kvm_nested_handle_guest_abort(nk: NestedKvm, vcpu: KvmVcpu, regs: SysRegs,
                                  abort: GuestAbort,
                                  hooks: FaultHooks | None = None) -> AbortOutcome:
    """Handle an abort from L2: through L1's stage 2 when the shadow has it enabled.

    Kernel: kvm_handle_guest_abort (kvm_is_nested_s2_mmu and nested_stage2_enabled).
    """
    mmu = current_mmu(nk, vcpu)
    walk = nested_s2_walker(nk, regs) if mmu is not None and mmu.nested_stage2_enabled else None
    return kvm_handle_guest_abort(abort, nk.kvm, vcpu, hooks, walk)


# -- L1's TLB invalidations -------------------------------------------------------------------


TLBI_TTL_TG_4K, TLBI_TTL_TG_16K, TLBI_TTL_TG_64K = 1, 2, 3
"""The TTL field's granule encodings (TTL[3:2]). Kernel: TLBI_TTL_TG_*."""

TTL_SIZES = {TLBI_TTL_TG_4K: {1: SZ_1G, 2: SZ_2M, 3: SZ_4K},
             TLBI_TTL_TG_16K: {2: SZ_32M, 3: SZ_16K},
             TLBI_TTL_TG_64K: {2: SZ_512M, 3: SZ_64K}}
"""The span of a TTL hint per granule and level; a level not listed has none (16K and 64K
level 0/1: no 52-bit IPA in nested)."""

GUEST_BLOCK_SIZES = {TLBI_TTL_TG_4K: (SZ_4K, SZ_2M, SZ_1G), TLBI_TTL_TG_16K: (SZ_16K, SZ_32M),
                     TLBI_TTL_TG_64K: (SZ_64K, SZ_512M)}
"""The sizes get_guest_mapping_ttl looks at, smallest first, per granule."""

MAX_INVAL_SIZE = {TLBI_TTL_TG_4K: SZ_1G, TLBI_TTL_TG_16K: SZ_32M, TLBI_TTL_TG_64K: SZ_512M}
"""The span invalidated without a usable TTL (no 52-bit IPA: 512M, not 4T, for 64K)."""


def ttl_to_size(ttl: int) -> int:
    """Return the span of a TTL hint (TG in bits [3:2], level in [1:0]); 0 if none.

    Kernel: nested.c ttl_to_size.
    """
    return TTL_SIZES.get(ttl >> 2 & 3, {}).get(ttl & 3, 0)


def vtcr_ttl_granule(vtcr: int) -> int:
    """Return the TTL granule of a VTCR_EL2.TG0 (a reserved value is 64K, as KVM reads it).

    Kernel: get_guest_mapping_ttl, compute_tlb_inval_range (the VTCR_EL2_TG0 switch).
    """
    return {0b00: TLBI_TTL_TG_4K, 0b10: TLBI_TTL_TG_16K}.get(vtcr >> 14 & 3, TLBI_TTL_TG_64K)


def get_guest_mapping_ttl(mmu: NestedMmu, addr: int) -> int:
    """Return a TTL from the level L1 mapped addr with, read from the shadow's SW bits.

    The granule is the shadow's cached VTCR_EL2.TG0; the addresses looked at are addr
    aligned down to each block size of that granule, smallest first; the first valid
    leaf carrying a level decides. 0 if none does, or if its span misses addr.

    Kernel: nested.c get_guest_mapping_ttl.
    """
    tg = vtcr_ttl_granule(mmu.tlb_vtcr)
    for sz in GUEST_BLOCK_SIZES[tg]:
        tmp = addr & ~(sz - 1)
        leaf = kvm_pgtable_get_leaf(mmu.pgt, tmp)
        if leaf.ret or not kvm_pte_valid(leaf.pte):
            continue
        level = (leaf.pte & KVM_NV_GUEST_MAP_SZ) >> 55
        if not level:
            continue
        ttl = tg << 2 | level
        return ttl if addr < tmp + ttl_to_size(ttl) else 0
    return 0


def compute_tlb_inval_range(mmu: NestedMmu, val: int, has_ttl: bool) -> int:
    """Return the span a TLBI by IPA invalidates.

    The instruction's TTL (Xt[47:44]) when it has one and the VM has FEAT_TTL (has_ttl),
    else the level the shadow keeps in its software bits; without either, the largest
    block of the shadow's granule (1G, 32M or 512M).

    Kernel: nested.c compute_tlb_inval_range.
    """
    ttl = val >> 44 & 0xF
    if not ttl or not has_ttl:
        ttl = get_guest_mapping_ttl(mmu, (val & ((1 << 36) - 1)) << 12)
    return ttl_to_size(ttl) or MAX_INVAL_SIZE[vtcr_ttl_granule(mmu.tlb_vtcr)]


def decode_range_tlbi(val: int) -> tuple[int, int]:
    """Return (base IPA, size) of a range TLBI's Xt: TG [47:46] (0 read as 64K), SCALE
    [45:44], NUM [43:39], BaseADDR [36:0] in granules; TTL [38:37] is ignored.

    The size is (NUM + 1) << (5 * SCALE + 1) granules (__TLBI_RANGE_PAGES).
    Kernel: sys_regs.c handle_ripas2e1is (decode_range_tlbi in later releases).
    """
    shift = {1: 12, 2: 14}.get(val >> 46 & 3, 16)
    num, scale = val >> 39 & 0x1F, val >> 44 & 3
    return (val & ((1 << 37) - 1)) << shift, (num + 1) << (5 * scale + 1) << shift


TTL_GRANULES = {SZ_4K: TLBI_TTL_TG_4K, SZ_16K: TLBI_TTL_TG_16K, SZ_64K: TLBI_TTL_TG_64K}
"""The TTL / range TG encoding of each granule size."""


def encode_ipas2_xt(ipa: int, granule: int = 0, level: int = 0) -> int:
    """Return Xt of TLBI IPAS2E1IS/IPAS2LE1IS: IPA[47:12] in [35:0], TTL in [47:44] (no
    hint when granule is 0). ValueError for a level TTL cannot encode.
    """
    if granule and not 0 <= level <= 3:
        raise ValueError(f"TTL level {level} is not 0..3")
    ttl = TTL_GRANULES[granule] << 2 | level if granule else 0
    return ttl << 44 | (ipa >> 12 & ((1 << 36) - 1))


def encode_range_xt(base: int, granule: int, scale: int, num: int, ttl_level: int = 0) -> int:
    """Return Xt of TLBI RIPAS2E1IS/RIPAS2LE1IS: TG [47:46], SCALE [45:44], NUM [43:39],
    TTL [38:37], BaseADDR [36:0] (base in granules). ValueError for a field out of range
    or a base not aligned to the granule.
    """
    if base % granule:
        raise ValueError(f"base {base:#x} is not a multiple of the {granule >> 10}K granule")
    if not 0 <= scale <= 3 or not 0 <= num <= 31 or not 0 <= ttl_level <= 3:
        raise ValueError(f"SCALE {scale} (0..3), NUM {num} (0..31), TTL {ttl_level} (0..3)")
    shift = granule.bit_length() - 1
    if base >> shift >> 37:
        raise ValueError(f"base {base:#x} does not fit BaseADDR[36:0]")
    return (TTL_GRANULES[granule] << 46 | scale << 44 | num << 39 | ttl_level << 37
            | base >> shift)


@dataclass(frozen=True)
class ShadowUnmap:
    """A TLBI emptied [ipa, ipa + size) of the shadow whose key has vmid."""

    vmid: int
    ipa: int
    size: int


@dataclass(frozen=True)
class ShadowS1Tlbi:
    """A TLBI of stage-1 entries KVM issued on a shadow (its VMID on the host), the shadow
    stage 2 left as it is."""

    vmid: int
    shadow_vmid: int


def kvm_s2_mmu_iterate_by_vmid(nk: NestedKvm, vmid: int) -> list[NestedMmu]:
    """Return the shadows holding a key with vmid. Kernel: kvm_s2_mmu_iterate_by_vmid."""
    return [m for m in nk.mmus if kvm_s2_mmu_valid(m) and get_vmid(m.tlb_vttbr) == vmid]


def s2_mmu_unmap_range(mmu: NestedMmu, vmid: int, start: int, size: int) -> ShadowUnmap:
    """Empty [start, start + size) of one shadow. Kernel: sys_regs.c s2_mmu_unmap_range."""
    kvm_pgtable_stage2_unmap(mmu.pgt, start, size)
    return ShadowUnmap(vmid, start, size)


def handle_ipas2e1is(nk: NestedKvm, regs: SysRegs, val: int) -> list[ShadowUnmap]:
    """Emulate L1's TLBI IPAS2E1IS or IPAS2LE1IS (one handler: the last-level hint does
    not change what KVM drops). Xt: IPA[47:12] in bits [35:0], TTL in [47:44].

    Every shadow with L1's current VMID loses the span compute_tlb_inval_range gives,
    the IPA aligned down to it.

    Kernel: sys_regs.c handle_ipas2e1is, s2_mmu_unmap_ipa; nested.c compute_tlb_inval_range.
    """
    vmid = get_vmid(regs.VTTBR_EL2)
    done = []
    for mmu in kvm_s2_mmu_iterate_by_vmid(nk, vmid):
        size = compute_tlb_inval_range(mmu, val, nk.vm.fs.has("FEAT_TTL"))
        base = ((val & ((1 << 36) - 1)) << 12) & ~(size - 1)
        done.append(s2_mmu_unmap_range(mmu, vmid, base, size))
    return done


def handle_ripas2e1is(nk: NestedKvm, regs: SysRegs, val: int) -> list[ShadowUnmap] | None:
    """Emulate L1's TLBI RIPAS2E1IS or RIPAS2LE1IS: drop the range Xt describes from every
    shadow with L1's current VMID; None (UNDEFINED) when the VM lacks FEAT_TLBIRANGE.

    Kernel: sys_regs.c handle_ripas2e1is, kvm_supported_tlbi_ipas2_op.
    """
    if not nk.vm.fs.has("FEAT_TLBIRANGE"):
        return None
    vmid = get_vmid(regs.VTTBR_EL2)
    base, size = decode_range_tlbi(val)
    return [s2_mmu_unmap_range(mmu, vmid, base, size)
            for mmu in kvm_s2_mmu_iterate_by_vmid(nk, vmid)]


def handle_vmalls12e1is(nk: NestedKvm, regs: SysRegs) -> list[ShadowUnmap]:
    """Emulate L1's TLBI VMALLS12E1IS: empty every shadow with L1's current VMID.

    The kernel unmaps [0, BIT(kvm_get_pa_bits)), the size its shadows are built with;
    the model's shadows are built with the VM's IPA size, and that is what is emptied.

    Kernel: sys_regs.c handle_vmalls12e1is, s2_mmu_unmap_range.
    """
    vmid = get_vmid(regs.VTTBR_EL2)
    return [s2_mmu_unmap_range(mmu, vmid, 0, 1 << mmu.pgt.ia_bits)
            for mmu in kvm_s2_mmu_iterate_by_vmid(nk, vmid)]


def handle_tlbi_el1(nk: NestedKvm, regs: SysRegs) -> list[ShadowS1Tlbi]:
    """Emulate a TLBI VMALLE1IS L1 executes at vEL2: KVM repeats it on every shadow with
    L1's current VMID (a stage-1 invalidation under that shadow's VMID); no shadow
    stage-2 entry is dropped.

    Kernel: sys_regs.c handle_tlbi_el1, s2_mmu_tlbi_s1e1 (__kvm_tlbi_s1e2).
    """
    vmid = get_vmid(regs.VTTBR_EL2)
    return [ShadowS1Tlbi(vmid, mmu.pgt.s2_mmu.vmid)
            for mmu in kvm_s2_mmu_iterate_by_vmid(nk, vmid)]
