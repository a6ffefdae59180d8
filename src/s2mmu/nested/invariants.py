"""The shadow stage-2 invariant, checked from the outside after every step.

No shadow stage-2 leaf grants more than L1's stage 2 and KVM's stage 2 together allow,
and each maps what their composition maps: for every page a shadow maps at an L2 IPA,
L1's stage 2 (walked with the shadow's key: VTTBR_EL2 and VTCR_EL2) translates the L2
IPA without a fault to a canonical IPA inside a memslot, whose HVA the host maps to
the shadow's output; the shadow is readable, writable, executable at EL1/EL0 only if
L1's leaf is, and writable only if the memslot is. A shadow with L1's stage 2 off
composes with the identity.

A stale shadow leaf (L1 changed its tables and has not yet invalidated) breaks the
invariant by design: L1 must follow a change with a TLBI, as the architecture asks of
any TLB user.

Kernel: what user_mem_abort (adjust_nested_fault_perms, the nested mapping-size cap),
kvm_nested_s2_unmap/kvm_nested_s2_wp and L1's TLBI emulation together guarantee
(arch/arm64/kvm/mmu.c, nested.c, sys_regs.c).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from s2mmu.arch.state import SysRegs
from s2mmu.kvm.host import PAGE_SHIFT, PAGE_SIZE
from s2mmu.kvm.invariants import S2Leaf, pgtable_leaves
from s2mmu.kvm.memslot import gfn_to_hva_memslot, gfn_to_memslot, memslot_is_readonly
from s2mmu.nested.mmu import NestedKvm, NestedMmu, kvm_s2_mmu_valid
from s2mmu.nested.nested import NestedWalkError, kvm_walk_nested_s2
from s2mmu.pgtable.prot import (
    KVM_PGTABLE_PROT_PX,
    KVM_PGTABLE_PROT_R,
    KVM_PGTABLE_PROT_UX,
    KVM_PGTABLE_PROT_W,
    kvm_pgtable_stage2_pte_prot,
)
from s2mmu.pgtable.s2trans import KvmS2Trans
from s2mmu.pgtable.table import KvmPgtable

PERMS = int(KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_W | KVM_PGTABLE_PROT_PX | KVM_PGTABLE_PROT_UX)


@dataclass(frozen=True)
class ShadowBeyondL1:
    """A shadow maps an L2 IPA L1's stage 2 does not translate (fsc: L1's fault status)."""

    vmid: int
    l2_ipa: int
    fsc: int


@dataclass(frozen=True)
class ShadowOutsideMemslot:
    """A shadow maps an L2 IPA whose canonical IPA is in no memslot."""

    vmid: int
    l2_ipa: int
    ipa: int


@dataclass(frozen=True)
class ShadowMismatch:
    """A shadow's output is not the host page behind the canonical IPA."""

    vmid: int
    l2_ipa: int
    ipa: int
    pa: int
    host_pa: int | None


@dataclass(frozen=True)
class ShadowPermsExceed:
    """A shadow grants permissions (KVM_PGTABLE_PROT_* R/W/PX/UX) beyond what L1's leaf
    and the memslot allow."""

    vmid: int
    l2_ipa: int
    granted: int
    allowed: int


NestedViolation = ShadowBeyondL1 | ShadowOutsideMemslot | ShadowMismatch | ShadowPermsExceed
"""A broken shadow stage-2 invariant: a closed union."""


def shadow_leaves(pgt: KvmPgtable) -> list[S2Leaf]:
    """Return every valid leaf of a shadow stage 2, in L2 IPA order (S2Leaf.ipa is L2's)."""
    return pgtable_leaves(pgt)


def l1_translate(nk: NestedKvm, mmu: NestedMmu, regs: SysRegs,
                 l2_ipa: int) -> KvmS2Trans | NestedWalkError:
    """Return L1's translation of l2_ipa under the shadow's key (identity if L1's
    stage 2 is off)."""
    if not mmu.nested_stage2_enabled:
        return KvmS2Trans(l2_ipa, PAGE_SIZE, True, True, True, True, 3, 0)
    key = replace(regs, VTTBR_EL2=mmu.tlb_vttbr, VTCR_EL2=mmu.tlb_vtcr)
    return kvm_walk_nested_s2(nk.vm, key, l2_ipa)


def allowed_prot(trans: KvmS2Trans, slot_writable: bool) -> int:
    """Return the R/W/PX/UX that L1's leaf and the memslot allow together."""
    p = 0
    p |= int(KVM_PGTABLE_PROT_R) if trans.readable else 0
    p |= int(KVM_PGTABLE_PROT_W) if trans.writable and slot_writable else 0
    p |= int(KVM_PGTABLE_PROT_PX) if trans.exec_el1 else 0
    p |= int(KVM_PGTABLE_PROT_UX) if trans.exec_el0 else 0
    return p


def check_shadow(nk: NestedKvm, mmu: NestedMmu, regs: SysRegs) -> list[NestedViolation]:
    """Return the broken rules of one shadow stage 2, a violation per L1 leaf at most."""
    vmid = mmu.tlb_vttbr >> 48 & 0xFFFF
    out: list[NestedViolation] = []
    for leaf in shadow_leaves(mmu.pgt):
        granted = int(kvm_pgtable_stage2_pte_prot(leaf.pte)) & PERMS
        off = 0
        while off < leaf.size:
            l2 = leaf.ipa + off
            trans = l1_translate(nk, mmu, regs, l2)
            if isinstance(trans, NestedWalkError) or trans.esr:
                fsc = trans.esr if isinstance(trans, KvmS2Trans) else 0
                out.append(ShadowBeyondL1(vmid, l2, fsc))
                break
            run = min(leaf.size - off, trans.block_size - (l2 & (trans.block_size - 1)))
            got = check_run(nk, vmid, l2, trans, leaf.pa + off, run, granted)
            if got is not None:
                out.append(got)
                break
            off += run
    return out


def check_run(nk: NestedKvm, vmid: int, l2: int, trans: KvmS2Trans, pa: int, run: int,
              granted: int) -> NestedViolation | None:
    """Check a run of pages that one L1 leaf maps linearly."""
    kvm = nk.kvm
    ipa = trans.output
    for page in range(0, run, PAGE_SIZE):
        gfn = (ipa + page) >> PAGE_SHIFT
        slot = gfn_to_memslot(kvm.slots(), gfn)
        if slot is None:
            return ShadowOutsideMemslot(vmid, l2 + page, ipa + page)
        allowed = allowed_prot(trans, not memslot_is_readonly(slot))
        if granted & ~allowed:
            return ShadowPermsExceed(vmid, l2 + page, granted, allowed)
        host_pa = kvm.host.hva_to_pa(gfn_to_hva_memslot(slot, gfn))
        if host_pa != pa + page:
            return ShadowMismatch(vmid, l2 + page, ipa + page, pa + page, host_pa)
    return None


def check_nested_invariants(nk: NestedKvm, regs: SysRegs) -> list[NestedViolation]:
    """Return every broken shadow rule of the VM's valid shadows (regs: L1's EL2 state,
    the key of each shadow replacing VTTBR_EL2/VTCR_EL2)."""
    out: list[NestedViolation] = []
    for mmu in nk.mmus:
        if kvm_s2_mmu_valid(mmu):
            out += check_shadow(nk, mmu, regs)
    return out
