"""pKVM's page state, kept in a stage-2 or hyp stage-1 leaf's software bits SW1:SW0.

The one definition of the state and its encoding in a prot (bits [56:55] of the PTE):
the page-table layer owns the software-bit encoding, so the dump (s2mmu.pgtable.dump)
names the bits and pKVM (s2mmu.pkvm.states) builds its ownership model on them.

A page's state is a two-bit value: OWNED (0), SHARED_OWNED (1), SHARED_BORROWED (2);
the meta-state NOPAGE (3) is what a component sees of a page it has no mapping of and
is never written into a PTE.

Kernel: enum pkvm_page_state, PKVM_PAGE_STATE_PROT_MASK, pkvm_mkstate, pkvm_getstate
(arch/arm64/kvm/hyp/include/nvhe/mem_protect.h); KVM_PGTABLE_PROT_SW0, SW1
(arch/arm64/include/asm/kvm_pgtable.h).
"""

from __future__ import annotations

import enum

from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_SW0, KVM_PGTABLE_PROT_SW1, KvmPgtableProt


class PkvmPageState(enum.IntEnum):
    """A component's view of a page. Kernel: enum pkvm_page_state."""

    PKVM_PAGE_OWNED = 0
    PKVM_PAGE_SHARED_OWNED = 1
    PKVM_PAGE_SHARED_BORROWED = 2
    PKVM_NOPAGE = 3


PKVM_PAGE_OWNED = PkvmPageState.PKVM_PAGE_OWNED
PKVM_PAGE_SHARED_OWNED = PkvmPageState.PKVM_PAGE_SHARED_OWNED
PKVM_PAGE_SHARED_BORROWED = PkvmPageState.PKVM_PAGE_SHARED_BORROWED
PKVM_NOPAGE = PkvmPageState.PKVM_NOPAGE

PKVM_PAGE_STATE_PROT_MASK = KVM_PGTABLE_PROT_SW0 | KVM_PGTABLE_PROT_SW1
_STATE_SHIFT = 55
"""The bit of KVM_PGTABLE_PROT_SW0 (a prot's software bits are the PTE's [58:55])."""


def pkvm_mkstate(prot: int, state: PkvmPageState) -> KvmPgtableProt:
    """Return prot with its software bits set to state.

    Kernel: pkvm_mkstate.
    """
    prot &= ~int(PKVM_PAGE_STATE_PROT_MASK)
    return KvmPgtableProt(prot | (int(state) << _STATE_SHIFT))


def pkvm_getstate(prot: int) -> PkvmPageState:
    """Return the page state held in prot's software bits.

    Kernel: pkvm_getstate.
    """
    return PkvmPageState((prot & PKVM_PAGE_STATE_PROT_MASK) >> _STATE_SHIFT)


def pkvm_sw_state(sw: int) -> PkvmPageState:
    """Return the page state in a leaf's software bits [58:55], given as a 4-bit value."""
    return pkvm_getstate(sw << _STATE_SHIFT)
