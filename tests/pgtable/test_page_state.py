"""pKVM page states in a prot's software bits: one definition for pgtable and pkvm."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from s2mmu.pgtable import page_state
from s2mmu.pgtable.page_state import (
    PKVM_NOPAGE,
    PKVM_PAGE_SHARED_BORROWED,
    PKVM_PAGE_SHARED_OWNED,
    PkvmPageState,
    pkvm_getstate,
    pkvm_mkstate,
    pkvm_sw_state,
)
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_SW0, KVM_PGTABLE_PROT_SW1
from s2mmu.pkvm import states


def test_pkvm_uses_the_page_table_layers_definition() -> None:
    assert states.PkvmPageState is page_state.PkvmPageState
    assert states.pkvm_getstate is page_state.pkvm_getstate
    assert states.pkvm_mkstate is page_state.pkvm_mkstate


def test_states_sit_in_sw1_sw0() -> None:
    assert pkvm_mkstate(0, PKVM_PAGE_SHARED_OWNED) == KVM_PGTABLE_PROT_SW0
    assert pkvm_mkstate(0, PKVM_PAGE_SHARED_BORROWED) == KVM_PGTABLE_PROT_SW1
    assert int(KVM_PGTABLE_PROT_SW0) == 1 << 55


@given(st.integers(0, 0b1111))
def test_sw_state_reads_the_low_two_software_bits(sw: int) -> None:
    assert pkvm_sw_state(sw) is PkvmPageState(sw & 0b11)
    assert pkvm_sw_state(sw) is pkvm_getstate(sw << 55)


def test_nopage_is_the_two_bit_value_three() -> None:
    assert pkvm_sw_state(0b0111) is PKVM_NOPAGE
