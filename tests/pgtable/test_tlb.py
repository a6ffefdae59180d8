"""TLB maintenance helpers record what they invalidate."""

from s2mmu.pgtable.caps import KvmCaps
from s2mmu.pgtable.env import new_env, new_stage2
from s2mmu.pgtable.events import TlbiVmid, TlbiVmidIpa, TlbiVmidRange
from s2mmu.pgtable.tlb import (
    MAX_TLBI_RANGE_PAGES,
    __kvm_tlb_flush_vmid_ipa,
    __kvm_tlb_flush_vmid_ipa_nsh,
    kvm_tlb_flush_vmid_range,
)


def test_range_flush_without_feat_tlbirange_flushes_the_whole_vmid() -> None:
    env = new_env()
    pgt = new_stage2(env, 40, vmid=7)
    kvm_tlb_flush_vmid_range(pgt.s2_mmu, 0x4000_0000, 0x20_0000)
    assert env.events.of_type(TlbiVmid) == [TlbiVmid(7)]


def test_range_flush_is_split_in_chunks_of_max_tlbi_range_pages() -> None:
    env = new_env(caps=KvmCaps(tlb_range=True))
    pgt = new_stage2(env, 48, vmid=2)
    pages = MAX_TLBI_RANGE_PAGES + 3
    kvm_tlb_flush_vmid_range(pgt.s2_mmu, 0, pages << 12)
    assert env.events.of_type(TlbiVmidRange) == [
        TlbiVmidRange(2, 0, MAX_TLBI_RANGE_PAGES, 4096),
        TlbiVmidRange(2, MAX_TLBI_RANGE_PAGES << 12, 3, 4096),
    ]


def test_max_tlbi_range_pages_is_32_times_2_to_the_16() -> None:
    assert MAX_TLBI_RANGE_PAGES == 32 << 16


def test_ipa_flushes_name_vmid_ipa_level_and_shareability() -> None:
    env = new_env()
    pgt = new_stage2(env, 40, vmid=3)
    __kvm_tlb_flush_vmid_ipa(pgt.s2_mmu, 0x1000, 3)
    __kvm_tlb_flush_vmid_ipa_nsh(pgt.s2_mmu, 0x2000, 2)
    assert env.events.of_type(TlbiVmidIpa) == [
        TlbiVmidIpa(3, 0x1000, 3, False),
        TlbiVmidIpa(3, 0x2000, 2, True),
    ]
