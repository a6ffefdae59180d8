"""Page states, components and their encoding in a prot's software bits.

A page's state is a two-bit value: OWNED (0), SHARED_OWNED (1), SHARED_BORROWED (2) and
the meta-state NOPAGE (3). In a page table it sits in the prot's SW0/SW1 bits
(PKVM_PAGE_STATE_PROT_MASK), put there by pkvm_mkstate and read back by pkvm_getstate;
the state and its encoding are defined once, in s2mmu.pgtable.page_state, and re-exported
here.
The host's default mappings are RWX for memory and RW for MMIO.

Kernel: enum pkvm_page_state, PKVM_PAGE_STATE_PROT_MASK, pkvm_mkstate, pkvm_getstate,
PKVM_HOST_MEM_PROT, PKVM_HOST_MMIO_PROT, enum pkvm_component_id
(arch/arm64/kvm/hyp/include/nvhe/mem_protect.h, as used by nvhe/mem_protect.c).
"""

from __future__ import annotations

from dataclasses import dataclass

from s2mmu.pgtable.page_state import (
    PKVM_NOPAGE,
    PKVM_PAGE_OWNED,
    PKVM_PAGE_SHARED_BORROWED,
    PKVM_PAGE_SHARED_OWNED,
    PKVM_PAGE_STATE_PROT_MASK,
    PkvmPageState,
    pkvm_getstate,
    pkvm_mkstate,
)
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_RW, KVM_PGTABLE_PROT_RWX
from s2mmu.pgtable.pte import PkvmComponentId

__all__ = [  # the page states are re-exported from s2mmu.pgtable.page_state
    "Component", "FFA", "Ffa", "Guest", "HOST", "HYP", "Host", "Hyp", "PKVM_HOST_MEM_PROT",
    "PKVM_HOST_MMIO_PROT", "PKVM_ID_FFA", "PKVM_ID_GUEST", "PKVM_ID_HOST", "PKVM_ID_HYP",
    "PKVM_NOPAGE", "PKVM_PAGE_OWNED", "PKVM_PAGE_SHARED_BORROWED", "PKVM_PAGE_SHARED_OWNED",
    "PKVM_PAGE_STATE_PROT_MASK", "PkvmPageState", "component_id", "pkvm_getstate",
    "pkvm_mkstate",
]

PKVM_ID_HOST = PkvmComponentId.PKVM_ID_HOST
PKVM_ID_HYP = PkvmComponentId.PKVM_ID_HYP
PKVM_ID_FFA = PkvmComponentId.PKVM_ID_FFA
PKVM_ID_GUEST = PkvmComponentId.PKVM_ID_GUEST

PKVM_HOST_MEM_PROT = KVM_PGTABLE_PROT_RWX
PKVM_HOST_MMIO_PROT = KVM_PGTABLE_PROT_RW


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
