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
