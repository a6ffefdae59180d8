"""ctypes binding of the library `build` makes: the kernel's pgtable.c behind a flat API.

One library holds one stage 2 (the glue's state is global); :meth:`KernelPgtable.init`
starts a fresh one. Events come back as the model's own event records, so the two
sides compare with ==.

Kernel: kvm_pgtable_stage2_map, _set_owner, _unmap, _wrprotect, _mkyoung,
_test_clear_young, _relax_perms, _flush, _split, kvm_pgtable_walk, kvm_pgtable_get_leaf,
kvm_get_vtcr (Linux 6.12 signatures; from 6.1: _map without walk flags, _mkold/_is_young
for one page, no _split, visitors called with (addr, end, level, ptep, flag, arg)).
"""

from __future__ import annotations

import ctypes as C
from dataclasses import dataclass
from pathlib import Path

from s2mmu.pgtable.events import (
    DcacheCleanInvalPoc,
    Dsb,
    Event,
    IcacheInvalPou,
    Isb,
    PageAlloc,
    PageFree,
    TlbiVmid,
    TlbiVmidIpa,
    TlbiVmidRange,
    Warn,
)


class _Event(C.Structure):
    _fields_ = [("kind", C.c_int), ("level", C.c_int), ("a", C.c_uint64),
                ("b", C.c_uint64), ("text", C.c_char * 64)]


class _Visit(C.Structure):
    _fields_ = [("visit", C.c_int), ("level", C.c_int), ("addr", C.c_uint64),
                ("old", C.c_uint64), ("flags", C.c_uint64)]


@dataclass(frozen=True)
class Visit:
    """One visitor call: which visit (LEAF 1, TABLE_PRE 2, TABLE_POST 4), the entry's
    level, the walk's address, the descriptor the visitor saw and the walk flags (in the
    kernel's encoding)."""

    visit: int
    level: int
    addr: int
    old: int
    flags: int

    def __str__(self) -> str:
        kind = {1: "LEAF", 2: "TABLE_PRE", 4: "TABLE_POST"}.get(self.visit, str(self.visit))
        return (f"{kind} level {self.level} addr {self.addr:#x} old {self.old:#x} "
                f"flags {self.flags:#x}")


@dataclass(frozen=True)
class BadAddress:
    """The kernel code handed the glue a table address outside the page pool."""

    pa: int


KernelEvent = Event | BadAddress

U64 = C.c_uint64
_SIGNATURES: dict[str, tuple[list[type], type | None]] = {
    "kg_version": ([], C.c_int),
    "kg_page_shift": ([], C.c_int),
    "kg_set_fallback": ([C.POINTER(U64), C.c_int], C.c_int),
    "kg_walk": ([U64, U64, U64, C.c_int, C.c_int, C.c_int], C.c_long),
    "kg_nvisits": ([], C.c_int),
    "kg_visits": ([], C.POINTER(_Visit)),
    "kg_get_leaf": ([U64, C.POINTER(U64), C.POINTER(C.c_int)], C.c_long),
    "kg_get_vtcr": ([U64, U64, C.c_uint32], U64),
    "kg_init": ([U64, U64, U64, U64, C.c_uint32, U64, U64, C.c_int, C.c_int, C.c_int,
                 C.c_int], C.c_int),
    "kg_set_memcache": ([C.c_int, C.POINTER(U64), C.c_int], C.c_int),
    "kg_get_memcache": ([C.c_int, C.POINTER(U64), C.c_int], C.c_int),
    "kg_map": ([U64, U64, U64, U64, U64], C.c_long),
    "kg_set_owner": ([U64, U64, C.c_uint8], C.c_long),
    "kg_unmap": ([U64, U64], C.c_long),
    "kg_wrprotect": ([U64, U64], C.c_long),
    "kg_mkyoung": ([U64], U64),
    "kg_test_clear_young": ([U64, U64, C.c_int], C.c_long),
    "kg_relax_perms": ([U64, U64], C.c_long),
    "kg_flush": ([U64, U64], C.c_long),
    "kg_split": ([U64, U64], C.c_long),
    "kg_create_unlinked": ([U64, C.c_int, U64, C.c_int], C.c_long),
    "kg_pgd": ([], U64),
    "kg_start_level": ([], C.c_int),
    "kg_nevents": ([], C.c_int),
    "kg_events": ([], C.POINTER(_Event)),
    "kg_clear_events": ([], None),
    "kg_rcu_depth": ([], C.c_int),
    "kg_live_pages": ([C.POINTER(U64), C.POINTER(C.c_int), C.POINTER(U64), C.c_int], C.c_int),
}

LIVE_BUFFER_BYTES = 32 << 20
"""How much page content one live_pages call can copy (8192 4K pages, 512 64K pages)."""


def _signed(v: int) -> int:
    return v - (1 << 32) if v >= 1 << 31 else v


class KernelPgtable:
    """The kernel's stage-2 page-table code, loaded from a built library."""

    def __init__(self, library: Path) -> None:
        self.lib = C.CDLL(str(library))
        for name, (args, res) in _SIGNATURES.items():
            fn = getattr(self.lib, name)
            fn.argtypes = args
            fn.restype = res
        self.series = int(self.lib.kg_version())
        """The kernel series the library was built from (KG_LINUX: 601, 612)."""
        self.page_shift = int(self.lib.kg_page_shift())
        """The library's PAGE_SHIFT: the stage-2 granule (12, 14 or 16)."""
        self.page_size = 1 << self.page_shift
        self.max_live = LIVE_BUFFER_BYTES // self.page_size
        self._pas = (U64 * self.max_live)()
        self._counts = (C.c_int * self.max_live)()
        self._words = (U64 * (LIVE_BUFFER_BYTES // 8))()

    def get_vtcr(self, mmfr0: int, mmfr1: int, ipa_bits: int) -> int:
        """Return kvm_get_vtcr(mmfr0, mmfr1, ipa_bits)."""
        return int(self.lib.kg_get_vtcr(mmfr0, mmfr1, ipa_bits))

    def init(self, *, pool_base: int, pool_pages: int, mmfr0: int, mmfr1: int, ipa_bits: int,
             vmid: int, pgd_pa: int, fwb: bool, tlb_range: bool, dic: bool,
             hw_afdbm: bool) -> int:
        """Start a fresh stage 2 whose PGD is at pgd_pa; return kvm_pgtable_stage2_init's."""
        return int(self.lib.kg_init(pool_base, pool_pages, mmfr0, mmfr1, ipa_bits, vmid,
                                    pgd_pa, fwb, tlb_range, dic, hw_afdbm))

    def set_memcache(self, which: int, pas: list[int]) -> None:
        """Make memcache which (0: the map cache, 1: mmu->split_page_cache) hold pas."""
        arr = (U64 * max(1, len(pas)))(*pas)
        ret = self.lib.kg_set_memcache(which, arr, len(pas))
        if ret:
            raise ValueError(f"kg_set_memcache: {ret}")

    def set_fallback(self, pas: list[int]) -> None:
        """Name the pages the next atomic allocations (an empty memcache's) return."""
        arr = (U64 * max(1, len(pas)))(*pas)
        ret = self.lib.kg_set_fallback(arr, len(pas))
        if ret:
            raise ValueError(f"kg_set_fallback: {ret}")

    def walk(self, addr: int, size: int, flags: int, fail_at: int, fail_ret: int,
             zap_at: int) -> tuple[int, tuple[Visit, ...]]:
        """kvm_pgtable_walk with a recording visitor: its return value and the calls.

        The visitor returns fail_ret at call fail_at and clears the entry at call zap_at
        (1-based; 0 for never)."""
        ret = int(self.lib.kg_walk(addr, size, flags, fail_at, fail_ret, zap_at))
        n = self.lib.kg_nvisits()
        raw = self.lib.kg_visits()
        return ret, tuple(Visit(int(v.visit), int(v.level), int(v.addr), int(v.old),
                                int(v.flags)) for v in raw[:n])

    def get_leaf(self, addr: int) -> tuple[int, int, int]:
        """kvm_pgtable_get_leaf: (return value, entry, level)."""
        pte = U64(0)
        level = C.c_int(0)
        ret = int(self.lib.kg_get_leaf(addr, C.byref(pte), C.byref(level)))
        return ret, int(pte.value), int(level.value)

    def memcache(self, which: int) -> list[int]:
        """Return the pages memcache which still holds, bottom first."""
        arr = (U64 * 2048)()
        n = self.lib.kg_get_memcache(which, arr, 2048)
        return [int(arr[i]) for i in range(n)]

    def map(self, addr: int, size: int, phys: int, prot: int, flags: int) -> int:
        """kvm_pgtable_stage2_map with the map memcache."""
        return int(self.lib.kg_map(addr, size, phys, prot, flags))

    def set_owner(self, addr: int, size: int, owner: int) -> int:
        """kvm_pgtable_stage2_set_owner with the map memcache."""
        return int(self.lib.kg_set_owner(addr, size, owner))

    def unmap(self, addr: int, size: int) -> int:
        """kvm_pgtable_stage2_unmap."""
        return int(self.lib.kg_unmap(addr, size))

    def wrprotect(self, addr: int, size: int) -> int:
        """kvm_pgtable_stage2_wrprotect."""
        return int(self.lib.kg_wrprotect(addr, size))

    def mkyoung(self, addr: int) -> int:
        """kvm_pgtable_stage2_mkyoung (6.12 returns the old descriptor)."""
        return int(self.lib.kg_mkyoung(addr))

    def test_clear_young(self, addr: int, size: int, mkold: bool) -> bool:
        """kvm_pgtable_stage2_test_clear_young (6.1: _mkold or _is_young of one page)."""
        return bool(self.lib.kg_test_clear_young(addr, size, mkold))

    def relax_perms(self, addr: int, prot: int) -> int:
        """kvm_pgtable_stage2_relax_perms."""
        return int(self.lib.kg_relax_perms(addr, prot))

    def flush(self, addr: int, size: int) -> int:
        """kvm_pgtable_stage2_flush."""
        return int(self.lib.kg_flush(addr, size))

    def split(self, addr: int, size: int) -> int:
        """kvm_pgtable_stage2_split with mmu->split_page_cache."""
        return int(self.lib.kg_split(addr, size))

    def create_unlinked(self, phys: int, level: int, prot: int, force_pte: bool) -> int:
        """kvm_pgtable_stage2_create_unlinked from the map memcache: the table's address or
        a negative errno (6.1 has none: -ENOSYS)."""
        return int(self.lib.kg_create_unlinked(phys, level, prot, int(force_pte)))

    def pgd(self) -> int:
        """Return the PGD's address."""
        return int(self.lib.kg_pgd())

    def start_level(self) -> int:
        """Return the table's start level."""
        return int(self.lib.kg_start_level())

    def rcu_depth(self) -> int:
        """Return the RCU read-side depth (0 between operations)."""
        return int(self.lib.kg_rcu_depth())

    def take_events(self) -> list[KernelEvent]:
        """Return the events recorded since the last call, as the model's records."""
        n = self.lib.kg_nevents()
        raw = self.lib.kg_events()
        out: list[KernelEvent] = []
        for i in range(n):
            e = raw[i]
            out.append(_event(e.kind, _signed(e.level), int(e.a), int(e.b),
                              e.text.decode(errors="replace"), self.page_size))
        self.lib.kg_clear_events()
        return out

    def live_pages(self) -> dict[int, tuple[int, bytes]]:
        """Return every page with a reference: address -> (refcount, contents)."""
        pas, counts = self._pas, self._counts
        n = self.lib.kg_live_pages(pas, counts, self._words, self.max_live)
        base, size = C.addressof(self._words), self.page_size
        return {int(pas[i]): (int(counts[i]), C.string_at(base + i * size, size))
                for i in range(n)}


def _event(kind: int, level: int, a: int, b: int, text: str, page_size: int) -> KernelEvent:
    match kind:
        case 1:
            return TlbiVmidIpa(a, b, level, False)
        case 2:
            return TlbiVmidIpa(a, b, level, True)
        case 3:
            return TlbiVmidRange(a, b, int(text), page_size)
        case 4:
            return TlbiVmid(a)
        case 5:
            return Dsb(text)
        case 6:
            return Isb()
        case 7:
            return DcacheCleanInvalPoc(a, b)
        case 8:
            return IcacheInvalPou(a, b)
        case 9:
            return PageAlloc(a)
        case 10:
            return PageFree(a)
        case 11:
            return Warn(text, "")
        case _:
            return BadAddress(a)
