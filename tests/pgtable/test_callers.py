"""The walker flags the kernel's fault path passes, per release (s2mmu.pgtable.callers)."""

from __future__ import annotations

import pytest

from s2mmu.pgtable.callers import access_fault_walk_flags, fault_walk_flags, walk_flag_names
from s2mmu.pgtable.profile import PROFILES
from s2mmu.pgtable.walk import KVM_PGTABLE_WALK_HANDLE_FAULT, KVM_PGTABLE_WALK_SHARED

SHARED, HANDLE_FAULT = KVM_PGTABLE_WALK_SHARED, KVM_PGTABLE_WALK_HANDLE_FAULT


@pytest.mark.parametrize(("release", "flags", "young"), [
    ("v6.1", 0, 0),                      # 6.1.192: map takes no flags, write lock
    ("v6.2", SHARED, 0),                 # 1577cb5823ce; access faults still exclusive
    ("v6.6", SHARED | HANDLE_FAULT, SHARED | HANDLE_FAULT),   # ddcadb297ce5, fc61f554e694
    ("v6.12", SHARED | HANDLE_FAULT, SHARED | HANDLE_FAULT),  # 6.12.118 as read
    ("v6.18", SHARED | HANDLE_FAULT, SHARED | HANDLE_FAULT),
    ("v6.19", SHARED, SHARED),           # 19cffd16ed64: HANDLE_FAULT inverted
])
def test_the_fault_path_passes_the_flags_of_its_release(release: str, flags: int,
                                                        young: int) -> None:
    assert fault_walk_flags(PROFILES[release]) == flags
    assert access_fault_walk_flags(PROFILES[release]) == young


def test_flags_are_named_as_the_kernel_spells_them() -> None:
    assert walk_flag_names(0) == "none"
    assert walk_flag_names(SHARED | HANDLE_FAULT) == "SHARED|HANDLE_FAULT"
