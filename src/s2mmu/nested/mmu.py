"""Shadow stage-2 MMUs for a guest hypervisor, their lookup, recycling and invalidation.

A VM whose guest hypervisor (L1) runs L2 guests keeps a pool of shadow stage 2s,
S2_MMU_PER_VCPU per vCPU. When a vCPU enters L2, it takes the shadow whose key matches
L1's registers: with L1's stage 2 on (HCR_EL2.VM), L1's VTTBR_EL2 without CnP and its
VTCR_EL2; with it off, L1's VMID alone. With no match, the next unused shadow (round
robin) is recycled: its key is replaced and an unmap is left pending, done on the
vCPU's next request check. KVM's fault path fills a shadow with the composition of
L1's stage 2 (walked in software) and KVM's own; L1's TLBIs empty it again.

Kernel: arch/arm64/kvm/nested.c (S2_MMU_PER_VCPU, kvm_vcpu_init_nested, lookup_s2_mmu,
get_s2_mmu_nested, kvm_vcpu_load_hw_mmu, kvm_vcpu_put_hw_mmu, check_nested_vcpu_requests,
kvm_s2_mmu_iterate_by_vmid, compute_tlb_inval_range, get_guest_mapping_ttl, ttl_to_size),
arch/arm64/kvm/sys_regs.c (handle_vmalls12e1is, handle_ipas2e1is, s2_mmu_unmap_ipa),
arch/arm64/kvm/mmu.c (kvm_handle_guest_abort's nested branch, kvm_init_nested_s2_mmu).
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

SZ_4K, SZ_2M, SZ_1G = 1 << 12, 1 << 21, 1 << 30


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

    Kernel: kvm_vcpu_load_hw_mmu (not in a hyp context), then the request check.
    """
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

    A walk KVM refuses (L1's VTCR_EL2 outside what KVM walks, or tables outside
    guest memory) is bad input to the model: ValueError naming the reason.

    Kernel: kvm_walk_nested_s2.
    """
    def walk(gipa: int) -> KvmS2Trans:
        got = kvm_walk_nested_s2(nk.vm, regs, gipa)
        if isinstance(got, NestedWalkError):
            raise ValueError(f"kvm_walk_nested_s2 refused: -{got.errno}: {got.reason}")
        return got
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


def ttl_to_size(ttl: int) -> int:
    """Return the span of a TTL hint (TG in bits [3:2], level in [1:0]); 0 if none.

    Only the 4KB granule is decoded (what the shadow stage 2 uses here).
    Kernel: ttl_to_size.
    """
    level, tg = ttl & 3, ttl >> 2
    if tg != 1:
        return 0
    return {1: SZ_1G, 2: SZ_2M, 3: SZ_4K}.get(level, 0)


def get_guest_mapping_ttl(mmu: NestedMmu, addr: int) -> int:
    """Return a TTL from the level L1 mapped addr with, read from the shadow's SW bits.

    Looks at the 4K, 2M and 1G aligned addresses at or below addr for a valid leaf with
    a level; returns 0 if none covers addr.

    Kernel: get_guest_mapping_ttl.
    """
    ttl = 1 << 2
    for sz in (SZ_4K, SZ_2M, SZ_1G):
        tmp = addr & ~(sz - 1)
        leaf = kvm_pgtable_get_leaf(mmu.pgt, tmp)
        if leaf.ret or not kvm_pte_valid(leaf.pte):
            continue
        level = (leaf.pte & KVM_NV_GUEST_MAP_SZ) >> 55
        if not level:
            continue
        ttl |= level
        return ttl if addr < tmp + ttl_to_size(ttl) else 0
    return 0


def compute_tlb_inval_range(mmu: NestedMmu, val: int, has_ttl: bool) -> int:
    """Return the span a TLBI by IPA invalidates: its TTL, the shadow's hint, or 1G.

    Kernel: compute_tlb_inval_range.
    """
    ttl = val >> 44 & 0xF
    if not ttl or not has_ttl:
        ttl = get_guest_mapping_ttl(mmu, (val & ((1 << 36) - 1)) << 12)
    return ttl_to_size(ttl) or SZ_1G


@dataclass(frozen=True)
class ShadowUnmap:
    """A TLBI emptied [ipa, ipa + size) of the shadow whose key has vmid."""

    vmid: int
    ipa: int
    size: int


def kvm_s2_mmu_iterate_by_vmid(nk: NestedKvm, vmid: int) -> list[NestedMmu]:
    """Return the shadows holding a key with vmid. Kernel: kvm_s2_mmu_iterate_by_vmid."""
    return [m for m in nk.mmus if kvm_s2_mmu_valid(m) and get_vmid(m.tlb_vttbr) == vmid]


def handle_ipas2e1is(nk: NestedKvm, regs: SysRegs, val: int,
                     has_ttl: bool = True) -> list[ShadowUnmap]:
    """Emulate L1's TLBI IPAS2E1IS (val as Xt: IPA[47:12] in bits [35:0], TTL [47:44]).

    Every shadow with L1's current VMID loses the span the TTL (or the level kept in
    the shadow's software bits) describes, aligned down.

    Kernel: handle_ipas2e1is, s2_mmu_unmap_ipa, compute_tlb_inval_range.
    """
    vmid = get_vmid(regs.VTTBR_EL2)
    done = []
    for mmu in kvm_s2_mmu_iterate_by_vmid(nk, vmid):
        size = compute_tlb_inval_range(mmu, val, has_ttl)
        base = ((val & ((1 << 36) - 1)) << 12) & ~(size - 1)
        kvm_pgtable_stage2_unmap(mmu.pgt, base, size)
        done.append(ShadowUnmap(vmid, base, size))
    return done


def handle_vmalls12e1is(nk: NestedKvm, regs: SysRegs) -> list[ShadowUnmap]:
    """Emulate L1's TLBI VMALLS12E1IS: empty every shadow with L1's current VMID.

    Kernel: handle_vmalls12e1is, s2_mmu_unmap_range.
    """
    vmid = get_vmid(regs.VTTBR_EL2)
    done = []
    for mmu in kvm_s2_mmu_iterate_by_vmid(nk, vmid):
        size = 1 << mmu.pgt.ia_bits
        kvm_pgtable_stage2_unmap(mmu.pgt, 0, size)
        done.append(ShadowUnmap(vmid, 0, size))
    return done
