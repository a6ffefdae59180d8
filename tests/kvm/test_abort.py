"""The guest abort's facts, read from ESR/HPFAR through arch's declarations and FSC table."""

import pytest

from s2mmu.kvm.abort import (
    GuestAbort,
    esr_fsc_is_access_flag_fault,
    esr_fsc_is_permission_fault,
    esr_fsc_is_translation_fault,
    fsc_level,
    kvm_vcpu_abt_issea,
    kvm_vcpu_get_fault_ipa,
    kvm_vcpu_trap_get_fault,
    kvm_vcpu_trap_get_perm_fault_granule,
)

# The kernel's own definitions (arch/arm64/include/asm/esr.h), as the oracle.
FAULT_L = {n: (0x2C if n < 0 else 0x04) + n for n in (-1, 0, 1, 2, 3)}
PERM_L = {n: 0x0C + n for n in range(4)}
ACCESS_L = {n: 0x08 + n for n in range(4)}
SEA = {0x10} | {0x14 + n for n in (-1, 0, 1, 2, 3)} | {0x18} | {0x1C + n for n in (-1, 0, 1, 2, 3)}


def dabt(fsc: int, extra: int = 0) -> GuestAbort:
    return GuestAbort(esr=(0x24 << 26) | (1 << 25) | extra | fsc, far=0, hpfar=0)


@pytest.mark.parametrize("code", range(64))
def test_fsc_classification_matches_the_kernel_for_every_code(code):
    abort = dabt(code)
    assert kvm_vcpu_trap_get_fault(abort) == code
    assert esr_fsc_is_translation_fault(abort) == (code in FAULT_L.values())
    assert esr_fsc_is_permission_fault(abort) == (code in PERM_L.values())
    assert esr_fsc_is_access_flag_fault(abort) == (code in ACCESS_L.values())
    assert kvm_vcpu_abt_issea(abort) == (code in SEA)


def test_instruction_abort_fsc_is_read_from_the_same_bits():
    abort = GuestAbort(esr=(0x20 << 26) | (1 << 25) | 0x0F, far=0, hpfar=0)
    assert kvm_vcpu_trap_get_fault(abort) == 0x0F
    assert esr_fsc_is_permission_fault(abort)


@pytest.mark.parametrize(("code", "level"), [(0x07, 3), (0x2B, -1), (0x13, -1), (0x0D, 1),
                                             (0x29, -1), (0x1B, -1), (0x08, 0)])
def test_fsc_level_from_the_table(code, level):
    assert fsc_level(code) == level


def test_fsc_level_of_an_unlevelled_code_is_api_misuse():
    with pytest.raises(ValueError, match="FSC 0x10 does not encode a level"):
        fsc_level(0x10)


@pytest.mark.parametrize(("code", "size"), [(0x0F, 4096), (0x0E, 2 << 20), (0x0D, 1 << 30)])
def test_permission_fault_granule(code, size):
    assert kvm_vcpu_trap_get_perm_fault_granule(dabt(code)) == size


def test_fault_ipa_from_hpfar_fipa():
    assert kvm_vcpu_get_fault_ipa(GuestAbort(0, 0, 0x402100)) == 0x40210000
