"""KVM_SET_USER_MEMORY_REGION's argument checks (the ones a scenario can reach)."""

from __future__ import annotations

import pytest

from s2mmu.kvm.vm import KvmError, kvm_set_memory_region
from tests.kvm.helpers import new_vm


@pytest.mark.parametrize(("gpa", "hva", "why"), [
    (0xFFFF_FFFF_FFFF_F000, 0x7F00_0000_0000,
     "guest_phys_addr 0xfffffffffffff000 + memory_size 0x2000 wraps"),
    (0x4000_0000, 0xFFFF_FFFF_FFFF_F000,
     "userspace_addr 0xfffffffffffff000 + memory_size 0x2000 is not a user address range"),
])
def test_a_region_that_wraps_is_einval(gpa: int, hva: int, why: str) -> None:
    kvm, _ = new_vm()
    with pytest.raises(KvmError) as e:
        kvm_set_memory_region(kvm, 1, 0, gpa, 0x2000, hva)
    assert (e.value.errno, e.value.why) == (-22, why)
    assert kvm.memslots == {}
