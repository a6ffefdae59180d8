"""Lay out translation tables for generated cases: a small encoder, not the model's walker.

The generator builds table trees with this module so that the conformance harness
shares no code with the model it checks (`s2mmu.arch`): descriptors are encoded here
from the Arm ARM's descriptor formats (VMSAv8-64 "Translation table descriptor
formats"), and tables are laid out by a plain top-down walk that only ever follows
entries it wrote itself.

Addresses: a `Shape` describes one stage's walk (granule, input size, start level,
stage-2 concatenation, FEAT_LPA2 format, endianness). A `TableTree` allocates its tables
in its own output space (PA for stage 2 and for stage 1 without stage 2, IPA for stage 1
under stage 2) and writes descriptors into an `Image` through `to_pa`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

DESC_VALID = 1 << 0
DESC_TABLE = 1 << 1


def mask(hi: int, lo: int) -> int:
    """Return a mask of bits hi..lo inclusive."""
    return ((1 << (hi + 1)) - 1) & ~((1 << lo) - 1)


@dataclass
class Image:
    """Sparse physical memory as 8-byte aligned words, with each word's byte order."""

    words: dict[int, int] = field(default_factory=dict)
    big_endian: dict[int, bool] = field(default_factory=dict)

    def write(self, pa: int, value: int, big_endian: bool) -> None:
        """Store a 64-bit descriptor at `pa` in the given byte order."""
        self.words[pa] = value
        self.big_endian[pa] = big_endian

    def read(self, pa: int) -> int:
        """Return the descriptor at `pa` (0 if never written)."""
        return self.words.get(pa, 0)

    def memory_entries(self) -> list[dict[str, object]]:
        """Return at-case.md memory entries: runs of words, big-endian ones as bytes."""
        entries: list[dict[str, object]] = []
        run: list[int] = []
        for pa in sorted(pa for pa, value in self.words.items() if value):
            if run and (pa != run[-1] + 8 or self.big_endian[pa] != self.big_endian[run[0]]):
                entries.append(self.entry(run))
                run = []
            run.append(pa)
        if run:
            entries.append(self.entry(run))
        return entries

    def entry(self, run: list[int]) -> dict[str, object]:
        """Return one memory entry for consecutive words."""
        if self.big_endian[run[0]]:
            data = b"".join(self.words[pa].to_bytes(8, "big") for pa in run)
            return {"pa": hex(run[0]), "bytes": data.hex()}
        return {"pa": hex(run[0]), "words": [hex(self.words[pa]) for pa in run]}


@dataclass(frozen=True)
class Shape:
    """The walk shape of one translation stage."""

    stage: int
    granule: int
    ia_bits: int
    start_level: int
    concat: int = 1
    ds: bool = False
    big_endian: bool = False

    @property
    def stride(self) -> int:
        """Return the number of address bits one table level resolves."""
        return self.granule - 3

    def shift(self, level: int) -> int:
        """Return the lowest input address bit that `level` resolves."""
        return self.granule + (3 - level) * self.stride

    def root_entries(self) -> int:
        """Return the number of entries of the (possibly concatenated) start table."""
        return max(1, 1 << max(0, self.ia_bits - self.shift(self.start_level)))

    def root_bytes(self) -> int:
        """Return the size of the start table(s) in bytes (at least 64, TTBR alignment)."""
        return max(64, 8 * self.root_entries())

    def index(self, va: int, level: int) -> int:
        """Return the table index that `va` selects at `level`."""
        if level == self.start_level:
            return (va >> self.shift(level)) % self.root_entries()
        return (va >> self.shift(level)) & ((1 << self.stride) - 1)

    def block_levels(self) -> tuple[int, ...]:
        """Return the levels where the granule allows block descriptors.

        ASL: AArch64.BlockDescSupported (4K: 1, 2 and 0 with DS; 16K: 2 and 1 with DS;
        64K: 2 and 1 when PAMax is 52 bits, as on QEMU's -cpu max).
        """
        if self.granule == 12:
            return (0, 1, 2) if self.ds else (1, 2)
        if self.granule == 14:
            return (1, 2) if self.ds else (2,)
        return (1, 2)


def encode_address(address: int, granule: int, ds: bool) -> int:
    """Return the output-address bits of a descriptor (table, block or page).

    Rules: with FEAT_LPA2 (DS=1) OA[51:50] sit in bits [9:8] and OA[49:granule] in
    place; with the 64 KiB granule OA[51:48] sit in bits [15:12] (FEAT_LPA); otherwise
    OA[47:granule] in place.
    """
    if ds:
        return (address & mask(49, granule)) | ((address >> 50 & 3) << 8)
    if granule == 16:
        return (address & mask(47, 16)) | ((address >> 48 & 0xF) << 12)
    return address & mask(47, granule)


def block_bits(level: int) -> int:
    """Return a leaf's type bits: page (0b11) at level 3, block (0b01) above."""
    return DESC_VALID | DESC_TABLE if level == 3 else DESC_VALID


@dataclass
class TableTree:
    """One stage's tables, written top-down into an Image."""

    shape: Shape
    image: Image
    alloc: Callable[[int, int], int]
    to_pa: Callable[[int], int] = lambda address: address
    root: int = 0
    tables: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Allocate the start table."""
        size = self.shape.root_bytes()
        self.root = self.alloc(size, max(size, 64))
        self.tables.append(self.root)

    def entry_address(self, table: int, va: int, level: int) -> int:
        """Return the address (in table space) of the entry `va` selects in `table`."""
        return table + 8 * self.shape.index(va, level)

    def read(self, address: int) -> int:
        """Return the descriptor at a table-space address."""
        return self.image.read(self.to_pa(address))

    def write(self, address: int, value: int) -> None:
        """Store a descriptor at a table-space address in this stage's byte order."""
        self.image.write(self.to_pa(address), value, self.shape.big_endian)

    def table_for(self, va: int, level: int, table_attrs: int) -> int | None:
        """Return the table at `level` on `va`'s path, creating missing tables.

        Returns None if an existing leaf or a foreign entry blocks the path.
        """
        table = self.root
        for current in range(self.shape.start_level, level):
            slot = self.entry_address(table, va, current)
            desc = self.read(slot)
            if desc == 0:
                page = 1 << self.shape.granule
                new = self.alloc(page, page)
                self.tables.append(new)
                self.write(slot, encode_address(new, self.shape.granule, self.shape.ds)
                           | table_attrs | DESC_VALID | DESC_TABLE)
                table = new
            elif desc & 3 == 3 and self.decode_table(desc) in self.tables:
                table = self.decode_table(desc)
            else:
                return None
        return table

    def decode_table(self, desc: int) -> int:
        """Return the next-level table address of a table descriptor this tree wrote."""
        granule, ds = self.shape.granule, self.shape.ds
        if ds:
            return (desc & mask(49, granule)) | ((desc >> 8 & 3) << 50)
        if granule == 16:
            return (desc & mask(47, 16)) | ((desc >> 12 & 0xF) << 48)
        return desc & mask(47, granule)

    def map(self, va: int, level: int, output: int, attrs: int, table_attrs: int = 0) -> bool:
        """Write a leaf for `va` at `level` to `output`; False if the slot is taken."""
        table = self.table_for(va, level, table_attrs)
        if table is None:
            return False
        slot = self.entry_address(table, va, level)
        if self.read(slot) != 0:
            return False
        self.write(slot, encode_address(output, self.shape.granule, self.shape.ds)
                   | attrs | block_bits(level))
        return True

    def put(self, va: int, level: int, value: int, table_attrs: int = 0) -> bool:
        """Write a raw entry (an invalid one with junk bits, say) for `va` at `level`."""
        table = self.table_for(va, level, table_attrs)
        if table is None:
            return False
        slot = self.entry_address(table, va, level)
        if self.read(slot) != 0:
            return False
        self.write(slot, value)
        return True

    def slot_free(self, va: int, level: int) -> bool:
        """Return whether `va`'s entry at `level` is reachable and empty, without writing."""
        table = self.root
        for current in range(self.shape.start_level, level + 1):
            desc = self.read(self.entry_address(table, va, current))
            if current == level:
                return desc == 0
            if desc == 0:
                return True
            if desc & 3 != 3 or self.decode_table(desc) not in self.tables:
                return False
            table = self.decode_table(desc)
        return False
