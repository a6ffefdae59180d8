"""A guest's physical memory as KVM reads and updates it from the host: the table port.

KVM's software walkers read guest tables with kvm_read_guest(), which goes through the
memslot's userspace mapping (so an evicted page is faulted back in by the host, and no
stage-2 mapping is needed), and update descriptors with __kvm_at_swap_desc(), which
needs a writable memslot. An address in no memslot fails the read: the port answers
an ExternalAbort and the walker decides what that means.

Kernel: virt/kvm/kvm_main.c kvm_read_guest; arch/arm64/kvm/at.c walk_s1 (the read),
__kvm_at_swap_desc (the update).
"""

from __future__ import annotations

from dataclasses import dataclass

from s2mmu.arch.memory import ExternalAbort, PhysMem
from s2mmu.kvm.host import PAGE_SHIFT, PAGE_SIZE
from s2mmu.kvm.memslot import Memslot, gfn_to_hva_memslot, gfn_to_memslot, memslot_is_readonly
from s2mmu.kvm.vm import Kvm


@dataclass(frozen=True)
class GuestRegion:
    """A memslot: guest-physical [gpa, gpa+size) backed by host memory at pa."""

    gpa: int
    size: int
    pa: int
    writable: bool = True

    def contains(self, gpa: int) -> bool:
        """Return whether the 8 bytes at gpa are inside this region."""
        return self.gpa <= gpa and gpa + 8 <= self.gpa + self.size


class GuestMemory:
    """Guest-physical memory over host PhysMem through memslots (a TableMemory port)."""

    def __init__(self, host: PhysMem, regions: tuple[GuestRegion, ...]) -> None:
        self.host, self.regions = host, regions

    def _region(self, gpa: int) -> GuestRegion | None:
        return next((r for r in self.regions if r.contains(gpa)), None)

    def read64(self, pa: int, big_endian: bool = False) -> int | ExternalAbort:
        """Return the word at guest-physical pa, or the abort of a read outside memslots."""
        r = self._region(pa)
        if r is None:
            return ExternalAbort(pa, f"guest PA {pa:#x} is in no memslot (kvm_read_guest fails)")
        return self.host.read64(r.pa + pa - r.gpa, big_endian)

    def cas64(self, pa: int, expected: int, new: int,
              big_endian: bool = False) -> bool | ExternalAbort:
        """Swap the word at guest-physical pa if it is still expected (__kvm_at_swap_desc)."""
        r = self._region(pa)
        if r is None:
            return ExternalAbort(pa, f"guest PA {pa:#x} is in no memslot")
        if not r.writable:
            return ExternalAbort(pa, f"guest PA {pa:#x} is in a read-only memslot (EPERM)")
        return self.host.cas64(r.pa + pa - r.gpa, expected, new, big_endian)

    def write64(self, pa: int, value: int, big_endian: bool = False) -> None:
        """Write the word at guest-physical pa (how a test or the guest lays out tables)."""
        r = self._region(pa)
        if r is None:
            raise ValueError(f"guest PA {pa:#x} is in no memslot")
        self.host.write64(r.pa + pa - r.gpa, value, big_endian)


def identity_guest(host: PhysMem, size: int = 1 << 48) -> GuestMemory:
    """Return guest memory that is host memory at the same addresses (one writable slot)."""
    return GuestMemory(host, (GuestRegion(0, size, 0),))


class MemslotMemory:
    """The memory of a KVM VM as KVM reads it: guest PA -> memslot -> HVA -> host page.

    A read outside every memslot fails (kvm_read_guest returns -EFAULT); the swap needs a
    writable memslot; write64 is how a scenario lays out L1's tables (as its image would).
    Pages are faulted in on the host as the userspace access would.

    Kernel: virt/kvm/kvm_main.c kvm_read_guest (through __gfn_to_hva_memslot).
    """

    def __init__(self, kvm: Kvm) -> None:
        self.kvm = kvm

    def _slot(self, gpa: int) -> Memslot | None:
        return gfn_to_memslot(self.kvm.slots(), gpa >> PAGE_SHIFT)

    def _pa(self, slot: Memslot, gpa: int) -> int | ExternalAbort:
        hva = gfn_to_hva_memslot(slot, gpa >> PAGE_SHIFT) + (gpa & (PAGE_SIZE - 1))
        try:
            return self.kvm.host.populate(hva)
        except ValueError as e:
            return ExternalAbort(gpa, f"guest PA {gpa:#x}: HVA {hva:#x}: {e}")

    def read64(self, pa: int, big_endian: bool = False) -> int | ExternalAbort:
        """Return the word at guest-physical pa, or the abort of a failed kvm_read_guest."""
        slot = self._slot(pa)
        if slot is None:
            return ExternalAbort(pa, f"guest PA {pa:#x} is in no memslot (kvm_read_guest fails)")
        host = self._pa(slot, pa)
        return host if isinstance(host, ExternalAbort) else \
            self.kvm.host.mem.read64(host, big_endian)

    def cas64(self, pa: int, expected: int, new: int,
              big_endian: bool = False) -> bool | ExternalAbort:
        """Swap the word at guest-physical pa if it is still expected (__kvm_at_swap_desc)."""
        slot = self._slot(pa)
        if slot is None:
            return ExternalAbort(pa, f"guest PA {pa:#x} is in no memslot")
        if memslot_is_readonly(slot):
            return ExternalAbort(pa, f"guest PA {pa:#x} is in a read-only memslot (EPERM)")
        host = self._pa(slot, pa)
        return host if isinstance(host, ExternalAbort) else \
            self.kvm.host.mem.cas64(host, expected, new, big_endian)

    def write64(self, pa: int, value: int, big_endian: bool = False) -> None:
        """Write the word at guest-physical pa; ValueError outside guest memory."""
        slot = self._slot(pa)
        host = None if slot is None else self._pa(slot, pa)
        if host is None or isinstance(host, ExternalAbort):
            raise ValueError(f"guest PA {pa:#x} is outside guest memory (no memslot or VMA)")
        self.kvm.host.mem.write64(host, value, big_endian)
