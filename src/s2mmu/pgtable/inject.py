"""Bugs the page-table library can be told to have, to show that the invariants catch
the classes of bug KVM's stage-2 code has had.

Each is one named departure from the kernel's code at one place, off unless a caller
(a scenario's ``[vm] inject``, a test) turns it on through the mm_ops:

- ``skip-tlbi-vmid-ipa``: __kvm_tlb_flush_vmid_ipa does nothing: every unmap and every
  break-before-make that invalidates by IPA leaves the TLBs as they were (the class of
  a missed invalidation: an unmap without its TLBI, a BBM that skips it);
- ``skip-tlbi-vmid``: __kvm_tlb_flush_vmid does nothing: the whole-VMID flushes after
  write-protecting a memslot for dirty logging (kvm_flush_remote_tlbs) and after a
  memslot change leave the TLBs as they were (the class of a write-protect without its
  flush: the guest keeps writing through a writable TLB entry and the dirty log misses
  it);
- ``table-tlbi-level-hint``: stage2_unmap_put_pte passes the level of a table entry it
  tears down as the TLBI's TTL hint instead of TLBI_TTL_UNKNOWN (a hint names the level
  of a leaf, and a table entry is none: the walk-cache and leaf entries cached through
  the table need not be invalidated). This is the kernel's own code before commit
  36e008323926 ("KVM: arm64: Don't pass a TLBI level hint when zapping table entries",
  "The TLBI level hints are for leaf entries only"; backported to 6.6.y, fixing
  6d9d2115c480 and 82bb02445de5), read in the 6.6.y backport's diff.

Kernel: __kvm_tlb_flush_vmid_ipa (arch/arm64/kvm/hyp/nvhe/tlb.c), stage2_unmap_put_pte
(arch/arm64/kvm/hyp/pgtable.c).
"""

from __future__ import annotations

import enum


class InjectedBug(enum.Enum):
    """A bug the library can be told to have (see the module docstring)."""

    SKIP_TLBI_VMID_IPA = "skip-tlbi-vmid-ipa"
    SKIP_TLBI_VMID = "skip-tlbi-vmid"
    TABLE_TLBI_LEVEL_HINT = "table-tlbi-level-hint"
