"""Each injected bug changes the one place it names, and nothing is injected by default."""

from __future__ import annotations

from s2mmu.pgtable.env import PgtableEnv
from s2mmu.pgtable.events import TLBI_TTL_UNKNOWN, TlbiVmid, TlbiVmidIpa
from s2mmu.pgtable.inject import InjectedBug
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_RW
from s2mmu.pgtable.stage2 import kvm_pgtable_stage2_map, kvm_pgtable_stage2_unmap
from s2mmu.pgtable.table import KvmPgtable
from s2mmu.pgtable.tlb import __kvm_tlb_flush_vmid, __kvm_tlb_flush_vmid_ipa

from .conftest import SZ_2M, SZ_4K, memcache

PA = 0x1_0000_0000


def unmap_tlbis(env: PgtableEnv, pgt: KvmPgtable, *bugs: InjectedBug) -> list[TlbiVmidIpa]:
    """Map one page, unmap its 2M (the page and its emptied tables); return the TLBIs."""
    kvm_pgtable_stage2_map(pgt, 0, SZ_4K, PA, KVM_PGTABLE_PROT_RW, memcache(env))
    pgt.ops.bugs = frozenset(bugs)
    mark = len(env.events)
    kvm_pgtable_stage2_unmap(pgt, 0, SZ_2M)
    return [e for e in env.events.since(mark) if isinstance(e, TlbiVmidIpa)]


def test_no_bug_by_default(env: PgtableEnv, pgt: KvmPgtable) -> None:
    assert pgt.ops.bugs == frozenset()
    levels = [e.level for e in unmap_tlbis(env, pgt)]
    assert levels == [3, TLBI_TTL_UNKNOWN, TLBI_TTL_UNKNOWN]  # the page, then two tables


def test_a_table_tlbi_with_its_level_as_hint(env: PgtableEnv, pgt: KvmPgtable) -> None:
    levels = [e.level for e in unmap_tlbis(env, pgt, InjectedBug.TABLE_TLBI_LEVEL_HINT)]
    assert levels == [3, 2, 1]


def test_skipping_the_ipa_flush_drops_every_ipa_tlbi(env: PgtableEnv, pgt: KvmPgtable) -> None:
    assert unmap_tlbis(env, pgt, InjectedBug.SKIP_TLBI_VMID_IPA) == []
    __kvm_tlb_flush_vmid(pgt.s2_mmu)
    assert env.events.of_type(TlbiVmid) == [TlbiVmid(pgt.s2_mmu.vmid)]


def test_skipping_the_vmid_flush_keeps_the_ipa_flush(env: PgtableEnv, pgt: KvmPgtable) -> None:
    pgt.ops.bugs = frozenset({InjectedBug.SKIP_TLBI_VMID})
    __kvm_tlb_flush_vmid(pgt.s2_mmu)
    __kvm_tlb_flush_vmid_ipa(pgt.s2_mmu, 0, 3)
    assert env.events.of_type(TlbiVmid) == []
    assert env.events.of_type(TlbiVmidIpa) == [TlbiVmidIpa(pgt.s2_mmu.vmid, 0, 3)]
