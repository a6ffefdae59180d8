"""The host capability record: conservative defaults, immutable."""

import dataclasses

import pytest

from s2mmu.pgtable.caps import KvmCaps


def test_the_default_host_has_none_of_the_optional_features_but_hardware_af() -> None:
    caps = KvmCaps()
    assert not (caps.stage2_fwb or caps.xnx or caps.tlb_range or caps.hvhe or caps.bti_kernel)
    assert caps.hw_afdbm


def test_capabilities_are_read_once_and_never_change() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        KvmCaps().stage2_fwb = True  # type: ignore[misc]
