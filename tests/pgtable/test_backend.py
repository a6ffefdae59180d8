"""The direct stage-2 backend: the page-table library behind KVM_PGT_FN, unchanged."""

from __future__ import annotations

from s2mmu.pgtable.backend import DIRECT, BackendKind, BackendLeaf, MmuLockMode
from s2mmu.pgtable.env import new_env, new_stage2
from s2mmu.pgtable.errno import EAGAIN
from s2mmu.pgtable.mm import KvmMmuMemoryCache
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_W
from s2mmu.pgtable.stage2 import kvm_pgtable_stage2_map
from s2mmu.pgtable.walk import KVM_PGTABLE_WALK_HANDLE_FAULT

RW = int(KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_W)
PA = 0x8000_0000


def test_direct_backend_is_the_library_with_the_read_lock() -> None:
    assert DIRECT.kind is BackendKind.DIRECT
    assert DIRECT.fault_lock is MmuLockMode.READ
    assert BackendKind.DIRECT.fn("stage2_map") == "kvm_pgtable_stage2_map"
    assert BackendKind.PKVM.fn("stage2_map") == "pkvm_pgtable_stage2_map"


def test_direct_map_then_leaf_and_unmap() -> None:
    env = new_env()
    pgt = DIRECT.init(env, 40, 1, 5)
    mc = KvmMmuMemoryCache()
    assert DIRECT.topup_memcache(mc, env.pool, 3) == 0
    assert DIRECT.map(pgt, 0x20_0000, 0x20_0000, PA, RW, mc, 0) == 0
    assert DIRECT.leaf(pgt, 0x20_1234) == BackendLeaf(0x20_0000, 0x20_0000, PA)
    assert DIRECT.map(pgt, 0x20_0000, 0x20_0000, PA, RW, mc,
                      KVM_PGTABLE_WALK_HANDLE_FAULT) == -EAGAIN
    assert DIRECT.unmap(pgt, 0x20_0000, 0x20_0000) == 0
    assert DIRECT.leaf(pgt, 0x20_1234) is None


def test_direct_calls_match_the_library_on_the_same_table() -> None:
    env_a, env_b = new_env(), new_env()
    a, b = DIRECT.init(env_a, 40, 1, 5), new_stage2(env_b, 40, vmid=1, mmfr0=5)
    mca, mcb = KvmMmuMemoryCache(), KvmMmuMemoryCache()
    DIRECT.topup_memcache(mca, env_a.pool, 3)
    DIRECT.topup_memcache(mcb, env_b.pool, 3)
    for ipa in (0x1000, 0x3000, 0x40_0000):
        assert DIRECT.map(a, ipa, 0x1000, PA + ipa, RW, mca, 0) == \
            kvm_pgtable_stage2_map(b, ipa, 0x1000, PA + ipa, RW, mcb, 0)
    ipas = (0x1000, 0x2000, 0x3000, 0x40_0000)
    assert [DIRECT.leaf(a, i) for i in ipas] == [DIRECT.leaf(b, i) for i in ipas]
    assert DIRECT.leaf(a, 0x2000) is None
    assert DIRECT.wrprotect(a, 0, 1 << 30) == 0
    assert DIRECT.test_clear_young(a, 0, 1 << 30, True)
    assert not DIRECT.test_clear_young(a, 0, 1 << 30, False)
    DIRECT.mkyoung(a, 0x1000, 0)
    assert DIRECT.test_clear_young(a, 0x1000, 0x1000, False)
    assert DIRECT.relax_perms(a, 0x3000, RW, 0) == 0
    assert DIRECT.flush(a, 0, 1 << 30) == 0
