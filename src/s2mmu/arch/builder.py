"""A small translation-table builder: lay out tables in physical memory for tests,
demos and scenarios (the way a guest kernel or firmware would).

It knows the descriptor formats and no hypervisor policy. Tables are allocated from a simple
bump allocator; the builder never frees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from s2mmu.arch.bits import mask
from s2mmu.arch.params import FINAL_LEVEL, Granule


class Memory64(Protocol):
    """Anything that reads and writes 64-bit words (PhysMem, or a guest-physical view)."""

    def read64(self, pa: int, big_endian: bool = False) -> int: ...

    def write64(self, pa: int, value: int, big_endian: bool = False) -> None: ...


@dataclass
class BumpAllocator:
    """Hands out granule-aligned, zeroed table pages from [base, limit)."""

    base: int
    limit: int
    granule: int = 4096
    next: int = field(init=False)

    def __post_init__(self) -> None:
        self.next = self.base

    def alloc(self, size: int | None = None) -> int:
        """Return the address of a fresh region of size bytes (default: one granule)."""
        size = size or self.granule
        addr = (self.next + size - 1) & ~(size - 1)
        if addr + size > self.limit:
            raise MemoryError(f"table allocator exhausted at {addr:#x}")
        self.next = addr + size
        return addr


def encode_oa(oa: int, granule: Granule, ds: bool) -> int:
    """Return the descriptor bits that hold output address oa (inverse of output_address)."""
    raw = oa & mask(47, granule.bits)
    if ds and granule is not Granule.G64K:
        raw |= ((oa >> 48) & 0b11) << 48 | ((oa >> 50) & 0b11) << 8
    elif granule is Granule.G64K:
        raw |= ((oa >> 48) & 0xF) << 12
    return raw


@dataclass
class TableBuilder:
    """Builds one translation table tree in mem.

    mem is physical memory for tables that live at PAs, or a view that translates
    guest-physical addresses for a guest's stage-1 tables.
    """

    mem: Memory64
    alloc: BumpAllocator
    granule: Granule
    iasize: int
    startlevel: int
    ds: bool = False
    big_endian: bool = False
    concat: int = 1
    root: int = field(init=False)

    def __post_init__(self) -> None:
        self.root = self.alloc.alloc(self.root_size())

    def root_size(self) -> int:
        """Return the size of the start-level table in bytes (concatenated tables too)."""
        g = self.granule
        resolved = g.bits + (FINAL_LEVEL - self.startlevel) * g.stride
        entries = 1 << max(self.iasize - resolved, 0)
        return max(entries * 8, 64)

    def index(self, level: int, ia: int) -> int:
        """Return the table index ia uses at level."""
        g = self.granule
        lsb = (FINAL_LEVEL - level) * g.stride + g.bits
        width = self.iasize - lsb if level == self.startlevel else g.stride
        return (ia >> lsb) & ((1 << width) - 1)

    def read(self, addr: int) -> int:
        return self.mem.read64(addr, self.big_endian)

    def write(self, addr: int, value: int) -> None:
        self.mem.write64(addr, value, self.big_endian)

    def map(self, ia: int, oa: int, size: int, attrs: int, level: int | None = None,
            table_attrs: int = 0) -> None:
        """Map [ia, ia+size) to oa with leaf attribute bits attrs (everything but type and OA).

        level: the leaf level (default: the final level). Table descriptors created on the
        way get table_attrs (APTable, XNTable... bits).
        """
        leaf_level = FINAL_LEVEL if level is None else level
        step = self.granule.block_size(leaf_level)
        if ia % step or oa % step or size % step:
            raise ValueError(
                f"ia/oa/size must be multiples of {step:#x} for a level-{leaf_level} leaf")
        for off in range(0, size, step):
            self._map_one(ia + off, oa + off, leaf_level, attrs, table_attrs)

    def _map_one(self, ia: int, oa: int, leaf_level: int, attrs: int, table_attrs: int) -> None:
        table = self.root
        for level in range(self.startlevel, leaf_level):
            entry = table + 8 * self.index(level, ia)
            desc = self.read(entry)
            if desc & 0b11 != 0b11:
                nxt = self.alloc.alloc(self.granule.size)
                desc = encode_oa(nxt, self.granule, self.ds) | table_attrs | 0b11
                self.write(entry, desc)
            table = self._table_address(desc)
        kind = 0b11 if leaf_level == FINAL_LEVEL else 0b01
        self.write(table + 8 * self.index(leaf_level, ia),
                   encode_oa(oa, self.granule, self.ds) | attrs | kind)

    def _table_address(self, desc: int) -> int:
        addr = desc & mask(47, self.granule.bits)
        if self.ds and self.granule is not Granule.G64K:
            addr |= ((desc >> 48) & 0b11) << 48 | ((desc >> 8) & 0b11) << 50
        elif self.granule is Granule.G64K:
            addr |= ((desc >> 12) & 0xF) << 48
        return addr

    def set_entry(self, ia: int, level: int, raw: int) -> int:
        """Overwrite the level entry for ia with raw; return the entry's address.

        The tables on the way must exist.
        """
        table = self.root
        for lvl in range(self.startlevel, level):
            table = self._table_address(self.read(table + 8 * self.index(lvl, ia)))
        entry = table + 8 * self.index(level, ia)
        self.write(entry, raw)
        return entry


# Common leaf attribute bits (stage 1): AF, SH=Inner Shareable, AttrIndx.
S1_AF = 1 << 10
S1_ISH = 0b11 << 8
S1_AP_RO = 1 << 7
S1_AP_EL0 = 1 << 6
S1_PXN = 1 << 53
S1_UXN = 1 << 54
S1_DBM = 1 << 51
S1_CONT = 1 << 52


def s1_attrs(attrindx: int = 0, ro: bool = False, el0: bool = False, pxn: bool = False,
             uxn: bool = False, af: bool = True, sh: int = 0b11, ng: bool = False,
             dbm: bool = False) -> int:
    """Return stage-1 leaf attribute bits."""
    return ((attrindx << 2) | (sh << 8) | (int(af) << 10) | (int(ng) << 11)
            | (int(ro) << 7) | (int(el0) << 6) | (int(pxn) << 53) | (int(uxn) << 54)
            | (int(dbm) << 51))


def s2_attrs(memattr: int = 0b1111, s2ap: int = 0b11, xn: int = 0, af: bool = True,
             sh: int = 0b11, dbm: bool = False) -> int:
    """Return stage-2 leaf attribute bits (MemAttr, S2AP, SH, AF, XN[1:0], DBM)."""
    return ((memattr << 2) | (s2ap << 6) | (sh << 8) | (int(af) << 10) | (xn << 53)
            | (int(dbm) << 51))
