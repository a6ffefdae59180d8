"""Physical memory: sparse over the whole 52-bit physical address space.

Translation-table walks read descriptors from here; hardware access-flag and dirty
state updates write back with an atomic compare-and-swap, and every such write is
recorded so that it can be observed (AT case `memory_changes`).

ASL: PhysMemRead/PhysMemWrite, AArch64.MemSwapTableDesc (the atomic descriptor update).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from s2mmu.arch.bits import U64
from s2mmu.arch.reprs import hex_repr

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PA_LIMIT = 1 << 52


@hex_repr()
@dataclass(frozen=True)
class MemoryWrite:
    """One 64-bit word changed by the translation hardware (or a CAS).

    before and after are descriptor values; big_endian says how they sit in memory.
    """

    pa: int
    before: int
    after: int
    big_endian: bool = False

    def as_le_words(self) -> tuple[int, int]:
        """Return (before, after) as little-endian words of the bytes in memory.

        This is how shared/formats/at-case.md spells memory words, whatever the
        tables' endianness.
        """
        if not self.big_endian:
            return self.before, self.after
        def swap(v: int) -> int:
            return int.from_bytes(v.to_bytes(8, "big"), "little")
        return swap(self.before), swap(self.after)


@dataclass(frozen=True)
class ExternalAbort:
    """A table-memory access that failed: the walk reports a synchronous External abort.

    ASL: PhysMemRetStatus with IsFault(memstatus), turned by HandleExternalTTWAbort into
    Fault_SyncExternalOnWalk at the level of the access.
    """

    pa: int
    reason: str


class TableMemory(Protocol):
    """The port a translation reads its tables through and updates descriptors through.

    PhysMem is one; a hypervisor can supply guest memory (read through its own stage 2,
    faulting pages in). A failed access returns an ExternalAbort instead of a value.

    ASL: PhysMemRead (the descriptor fetch), AArch64.MemSwapTableDesc (the update).
    """

    def read64(self, pa: int, big_endian: bool = False) -> int | ExternalAbort: ...

    def cas64(self, pa: int, expected: int, new: int,
              big_endian: bool = False) -> bool | ExternalAbort: ...


class PhysMem:
    """Sparse byte-addressed physical memory; untouched memory reads as zero.

    Backing store is allocated a 4 KiB page at a time, so a table at 2^51 costs one
    page of host memory.
    """

    def __init__(self) -> None:
        self._pages: dict[int, bytearray] = {}
        self.hw_writes: list[MemoryWrite] = []

    def _check(self, pa: int, size: int) -> None:
        if pa < 0 or pa + size > PA_LIMIT:
            raise ValueError(f"physical address {pa:#x} (+{size}) is outside the 52-bit space")

    def read_bytes(self, pa: int, size: int) -> bytes:
        """Return size bytes starting at pa."""
        self._check(pa, size)
        out = bytearray()
        while size:
            page, off = pa >> PAGE_SHIFT, pa & (PAGE_SIZE - 1)
            n = min(size, PAGE_SIZE - off)
            backing = self._pages.get(page)
            out += backing[off : off + n] if backing is not None else bytes(n)
            pa, size = pa + n, size - n
        return bytes(out)

    def write_bytes(self, pa: int, data: bytes) -> None:
        """Write data starting at pa."""
        self._check(pa, len(data))
        view = memoryview(data)
        while view:
            page, off = pa >> PAGE_SHIFT, pa & (PAGE_SIZE - 1)
            n = min(len(view), PAGE_SIZE - off)
            backing = self._pages.get(page)
            if backing is None:
                backing = self._pages[page] = bytearray(PAGE_SIZE)
            backing[off : off + n] = view[:n]
            pa, view = pa + n, view[n:]

    def read64(self, pa: int, big_endian: bool = False) -> int:
        """Return the 64-bit word at pa (8-byte aligned fast path)."""
        page, off = pa >> PAGE_SHIFT, pa & (PAGE_SIZE - 1)
        if off <= PAGE_SIZE - 8 and 0 <= pa < PA_LIMIT:
            backing = self._pages.get(page)
            if backing is None:
                return 0
            return int.from_bytes(backing[off : off + 8], "big" if big_endian else "little")
        return int.from_bytes(self.read_bytes(pa, 8), "big" if big_endian else "little")

    def write64(self, pa: int, value: int, big_endian: bool = False) -> None:
        """Write the 64-bit word value at pa (a word inside one page: fast path)."""
        data = (value & U64).to_bytes(8, "big" if big_endian else "little")
        page, off = pa >> PAGE_SHIFT, pa & (PAGE_SIZE - 1)
        if off <= PAGE_SIZE - 8 and 0 <= pa < PA_LIMIT:
            backing = self._pages.get(page)
            if backing is None:
                backing = self._pages[page] = bytearray(PAGE_SIZE)
            backing[off : off + 8] = data
            return
        self.write_bytes(pa, data)

    def cas64(self, pa: int, expected: int, new: int, big_endian: bool = False) -> bool:
        """Atomically replace the word at pa with new if it still equals expected.

        Returns whether the swap happened. Successful swaps that change the value are
        recorded in hw_writes.
        """
        current = self.read64(pa, big_endian)
        if current != expected:
            return False
        if new != current:
            self.write64(pa, new, big_endian)
            self.hw_writes.append(MemoryWrite(pa, current, new, big_endian))
        return True

    def page_bytes(self, page: int) -> bytes | None:
        """Return the 4 KiB of page number page (PA >> 12), or None if never written."""
        backing = self._pages.get(page)
        return None if backing is None else bytes(backing)

    def pages_allocated(self) -> int:
        """Return how many 4 KiB pages of backing store exist."""
        return len(self._pages)

    def free_page(self, pa: int) -> None:
        """Drop the backing store of the page holding pa (it reads as zero again)."""
        self._pages.pop(pa >> PAGE_SHIFT, None)
