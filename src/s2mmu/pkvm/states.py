"""Page states, components and their encoding in a prot's software bits.

A page's state is a two-bit value: OWNED (0), SHARED_OWNED (1), SHARED_BORROWED (2) and
the meta-state NOPAGE (3). In a page table it sits in the prot's SW0/SW1 bits
(PKVM_PAGE_STATE_PROT_MASK), put there by pkvm_mkstate and read back by pkvm_getstate.
The host's default mappings are RWX for memory and RW for MMIO.

Kernel: enum pkvm_page_state, PKVM_PAGE_STATE_PROT_MASK, pkvm_mkstate, pkvm_getstate,
PKVM_HOST_MEM_PROT, PKVM_HOST_MMIO_PROT, enum pkvm_component_id
(arch/arm64/kvm/hyp/include/nvhe/mem_protect.h, as used by nvhe/mem_protect.c).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from s2mmu.pgtable.prot import (
    KVM_PGTABLE_PROT_RW,
    KVM_PGTABLE_PROT_RWX,
    KVM_PGTABLE_PROT_SW0,
    KVM_PGTABLE_PROT_SW1,
    KvmPgtableProt,
)
from s2mmu.pgtable.pte import PkvmComponentId

PKVM_ID_HOST = PkvmComponentId.PKVM_ID_HOST
PKVM_ID_HYP = PkvmComponentId.PKVM_ID_HYP
PKVM_ID_FFA = PkvmComponentId.PKVM_ID_FFA
PKVM_ID_GUEST = PkvmComponentId.PKVM_ID_GUEST


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

PKVM_HOST_MEM_PROT = KVM_PGTABLE_PROT_RWX
PKVM_HOST_MMIO_PROT = KVM_PGTABLE_PROT_RW


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


@dataclass(frozen=True)
class Host:
    """The host kernel (PKVM_ID_HOST)."""


@dataclass(frozen=True)
class Hyp:
    """The hypervisor at EL2 (PKVM_ID_HYP)."""


@dataclass(frozen=True)
class Ffa:
    """The FF-A proxy's peer, the secure world (PKVM_ID_FFA)."""


@dataclass(frozen=True)
class Guest:
    """A guest VM by its pKVM handle, protected or not (PKVM_ID_GUEST for every one)."""

    handle: int
    protected: bool


Component = Host | Hyp | Ffa | Guest
"""Who may own or borrow a page."""

HOST = Host()
HYP = Hyp()
FFA = Ffa()


def component_id(c: Component) -> PkvmComponentId:
    """Return the owner id an annotation carries for c (one id for every guest).

    Kernel: enum pkvm_component_id.
    """
    match c:
        case Host():
            return PKVM_ID_HOST
        case Hyp():
            return PKVM_ID_HYP
        case Ffa():
            return PKVM_ID_FFA
        case Guest():
            return PKVM_ID_GUEST
