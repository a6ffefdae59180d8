"""Per-vCPU TLBs: filled by the vCPU's guest accesses, emptied by the TLBIs KVM issues,
and checked against KVM's stage 2 once KVM believes it has invalidated.

Each TLBI event the page-table library records stands for one hypervisor helper; here it
becomes the architecture's operations (s2mmu.arch.tlb), as the helper issues them:

- TlbiVmidIpa (__kvm_tlb_flush_vmid_ipa): TLBI IPAS2E1IS with the level hint, then
  TLBI VMALLE1IS (the combined entries an IPA invalidation need not reach); with nsh
  (__kvm_tlb_flush_vmid_ipa_nsh) the same, non-broadcast: only the TLB of the CPU that
  ran it (the vCPU whose fault issued it) is invalidated;
- TlbiVmidRange (__kvm_tlb_flush_vmid_range): TLBI RIPAS2E1IS over the range, then
  VMALLE1IS;
- TlbiVmid (__kvm_tlb_flush_vmid): TLBI VMALLS12E1IS.

An entry is stale when, at the end of a step (every TLBI KVM meant to issue has been
issued), KVM's stage 2 no longer gives what it holds: the IPA is unmapped, maps another
PA, or lost a permission the entry grants, or a stage-2 table descriptor it caches is
gone. A cached entry with fewer permissions than the tables is not stale: KVM relies on
that (relax_perms and mkyoung invalidate only locally, and a spurious fault is retried).
The guest's own stage 1 does not change in a scenario; stage-1 walk-cache entries are
not checked.

Kernel: __kvm_tlb_flush_vmid_ipa, __kvm_tlb_flush_vmid_ipa_nsh, __kvm_tlb_flush_vmid,
__kvm_tlb_flush_vmid_range (arch/arm64/kvm/hyp/nvhe/tlb.c and vhe/tlb.c).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from s2mmu.arch.access import AccessDescriptor, AccessType
from s2mmu.arch.descriptors import Table, ap, pxn
from s2mmu.arch.faults import FaultRecord
from s2mmu.arch.params import get_s2_ttw_params
from s2mmu.arch.perms import S2Perms, s2_direct_permissions
from s2mmu.arch.state import SysRegs
from s2mmu.arch.tlb import (
    Cached,
    Tlb,
    TlbEntry,
    Tlbi,
    TlbiOp,
    TlbStage,
    WalkCacheEntry,
    cached_by,
    level_shift,
)
from s2mmu.arch.translate import AddressDescriptor, Env, s2_walk
from s2mmu.arch.walk import TTWState, WalkStep
from s2mmu.kvm.cpu import arch_features, vcpu_regs
from s2mmu.kvm.vm import Kvm
from s2mmu.pgtable.events import TLBI_TTL_UNKNOWN, Event, TlbiVmid, TlbiVmidIpa, TlbiVmidRange

TTBR_ASID_SHIFT = 48
VTTBR_BADDR = ((1 << 48) - 1) & ~1
"""VTTBR_EL2.BADDR with 4K pages and a 48-bit PA (bit 0 is CnP)."""


def tlbi_ops(ev: Event) -> list[Tlbi]:
    """Return the TLB maintenance a recorded TLBI event stands for (none for others)."""
    if isinstance(ev, TlbiVmidIpa):
        ttl = None if ev.level == TLBI_TTL_UNKNOWN else ev.level
        bc = not ev.nsh
        return [Tlbi(TlbiOp.IPAS2E1, ev.vmid, ev.ipa, 0, ttl, bc),
                Tlbi(TlbiOp.VMALLE1, ev.vmid, broadcast=bc)]
    if isinstance(ev, TlbiVmidRange):
        return [Tlbi(TlbiOp.RIPAS2E1, ev.vmid, ev.ipa, ev.pages * ev.page_size),
                Tlbi(TlbiOp.VMALLE1, ev.vmid)]
    if isinstance(ev, TlbiVmid):
        return [Tlbi(TlbiOp.VMALLS12E1, ev.vmid)]
    return []


class StaleReason(enum.Enum):
    """How a cached entry disagrees with KVM's stage 2."""

    UNMAPPED = "the IPA is no longer mapped"
    OTHER_OUTPUT = "stage 2 now maps the IPA elsewhere"
    PERMISSION_REVOKED = "stage 2 no longer grants a permission the entry grants"
    TABLE_GONE = "the stage-2 table descriptor it caches is gone"


@dataclass(frozen=True)
class StaleTlbEntry:
    """A vCPU's TLB holds a translation KVM's stage 2 no longer gives (a missed TLBI)."""

    vcpu: int
    entry: Cached
    reason: StaleReason
    now: int | None
    """What stage 2 gives now: the PA for the entry's IPA, or the table's address (None:
    nothing)."""


def _s2_walk(kvm: Kvm, ipa: int) -> tuple[TTWState | FaultRecord, list[WalkStep]]:
    """Walk KVM's stage 2 for ipa as the hardware would; return the result and the steps."""
    env = Env(kvm.host.mem, arch_features(kvm))
    p = get_s2_ttw_params(vcpu_regs(kvm), env.fs, env.choices)
    trace: list[WalkStep] = []
    got = s2_walk(p, ipa, AccessDescriptor(AccessType.GPR, 1, False), env, trace)
    return got, trace


def s2_perms(state: TTWState) -> S2Perms:
    """Return the permissions a stage-2 leaf grants (no FEAT_XNX, no hardware dirty state)."""
    return s2_direct_permissions(state, xnx=False, ha=False, hd=False)


def _lost(cached: S2Perms, now: S2Perms) -> bool:
    return (cached.r and not now.r) or (cached.w and not now.w) or (cached.px and not now.px)


def entry_stale(kvm: Kvm, vcpu: int, e: Cached) -> StaleTlbEntry | None:
    """Return how a cached entry disagrees with KVM's stage 2 now (None: it agrees)."""
    if isinstance(e, WalkCacheEntry):
        if e.stage != 2:
            return None
        _, steps = _s2_walk(kvm, e.ia)
        at = next((s for s in steps if s.level == e.level), None)
        if at is None or not isinstance(at.decoded, Table) or at.decoded.next_base != e.next_table:
            now = at.decoded.next_base if at is not None and isinstance(at.decoded, Table) \
                else None
            return StaleTlbEntry(vcpu, e, StaleReason.TABLE_GONE, now)
        return None
    if e.s2_perms is None:  # stage 1 only: not KVM's tables
        return None
    got, _ = _s2_walk(kvm, e.ipa)
    if isinstance(got, FaultRecord):
        return StaleTlbEntry(vcpu, e, StaleReason.UNMAPPED, None)
    span = 1 << level_shift(12, got.level)
    pa = (got.leaf.oa & ~(span - 1)) | (e.ipa & (span - 1))
    if pa != e.oa:
        return StaleTlbEntry(vcpu, e, StaleReason.OTHER_OUTPUT, pa)
    if _lost(e.s2_perms, s2_perms(got)):
        return StaleTlbEntry(vcpu, e, StaleReason.PERMISSION_REVOKED, pa)
    return None


def s1_permits(e: TlbEntry, kind: str, s1_leaf: int) -> bool:
    """Return whether an EL1 access of kind passes the cached stage-1 leaf (AP[2] for a
    write, PXN for a fetch; EL1 reads any valid leaf)."""
    if kind == "write":
        return not ap(s1_leaf) & 0b10
    if kind == "exec":
        return not pxn(s1_leaf)
    return True


class VcpuTlbs:
    """Every vCPU's TLB, in step with the VM's event log.

    consult: the vCPUs whose accesses look in their TLB before walking (the others'
    TLBs are still filled and checked).
    """

    def __init__(self, kvm: Kvm, nvcpus: int, consult: frozenset[int] = frozenset()) -> None:
        self.kvm = kvm
        self.tlbs = [Tlb() for _ in range(nvcpus)]
        self.s1_leaves: list[dict[TlbEntry, int]] = [{} for _ in range(nvcpus)]
        self.consult = consult
        self.seen = len(kvm.env.events)
        self.reported: set[tuple[int, Cached]] = set()

    def sync(self, running: int | None) -> None:
        """Apply the TLBIs recorded since the last sync; a local one reaches only the TLB
        of the vCPU running (None: the host, whose TLB is not modelled)."""
        events = self.kvm.env.events
        for ev in events.since(self.seen):
            for t in tlbi_ops(ev):
                targets = range(len(self.tlbs)) if t.broadcast else \
                    ([running] if running is not None else [])
                for i in targets:
                    self.tlbs[i].invalidate(t)
        self.seen = len(events)

    def fill(self, vcpu: int, regs: SysRegs, va: int, out: AddressDescriptor) -> None:
        """Cache what a completed access used (through KVM's own stage 2 only: a shadow
        stage 2 of a nested guest is not followed here)."""
        if out.s2 is None or regs.VTTBR_EL2 & VTTBR_BADDR != self.kvm.pgt.pgd:
            return
        asid = regs.TTBR0_EL1 >> TTBR_ASID_SHIFT
        cached = cached_by(out, va, self.kvm.pgt.s2_mmu.vmid, asid, s2_perms(out.s2))
        self.tlbs[vcpu].fill(cached)
        if out.s1 is not None and isinstance(cached[0], TlbEntry):
            self.s1_leaves[vcpu][cached[0]] = out.s1.leaf.raw

    def lookup(self, vcpu: int, regs: SysRegs, va: int, kind: str,
               mmu_on: bool) -> int | None:
        """Return the PA a TLB hit gives an access (None: a miss, or the cached entry does
        not grant the access and the PE walks)."""
        vmid = self.kvm.pgt.s2_mmu.vmid
        tlb = self.tlbs[vcpu]
        e = tlb.lookup(vmid, regs.TTBR0_EL1 >> TTBR_ASID_SHIFT, va) if mmu_on \
            else tlb.lookup_ipa(vmid, va)
        if e is None:
            return None
        p = e.s2_perms
        if p is None or not (p.w if kind == "write" else p.px if kind == "exec" else p.r):
            return None
        if e.stage is TlbStage.COMBINED and not s1_permits(e, kind, self.s1_leaves[vcpu][e]):
            return None
        return e.oa + (va - e.ia)

    def stale(self) -> list[StaleTlbEntry]:
        """Return the cached entries that disagree with KVM's stage 2 now and were not
        reported before (an entry stays stale until a TLBI or an eviction removes it)."""
        out = []
        for i, tlb in enumerate(self.tlbs):
            for e in tlb.entries:
                s = entry_stale(self.kvm, i, e)
                if s is not None and (i, e) not in self.reported:
                    self.reported.add((i, e))
                    out.append(s)
        return out
