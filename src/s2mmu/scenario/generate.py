"""Random scenario files: typed choices in, TOML text out (the fuzzers' generators).

A generated scenario is valid (``s2mmu run`` must not refuse it) and consistent: the
generator keeps its own small picture of the timeline (which VMAs cover which HVAs, which
memslots surely exist, which pages were ever poisoned or unmapped) so that every event it
writes can run, and the few expectations it states are ones KVM must meet. A scenario
that asks for a failure carries one impossible expectation on a named step, and nothing
else may fail.

Cases that hit a failure class known to the project (see ``Known``) are tagged; the suite
leaves out the tags whose fix has not landed, the campaign (bench/fuzz_campaign.py) keeps
them all. A :class:`Reach` narrows what is drawn: :data:`FULL` is everything the model
runs; ``s2mmu real campaign`` passes what the real VMM can express (s2mmu.real.campaign).
The choices come from a :class:`Draw`: random.Random here (:class:`RandomDraw`), hypothesis
in the test suite (tests/scenario/strategies.py).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

T = TypeVar("T")

PAGE = 1 << 12
M2 = 1 << 21
G1 = 1 << 30
HVA_BASE = 0x7F00_0000_0000
HVA_STRIDE = 1 << 32
"""VMA number i lives at HVA_BASE + i * HVA_STRIDE: regions never collide."""
GPA_BASE = 0x4000_0000
GPA_STRIDE = 1 << 31
"""Memslot creation number i sits at GPA_BASE + i * GPA_STRIDE (fresh, never overlapping)."""
HOLE_IPA = 0x900_0000
"""An IPA no memslot covers (an emulated device)."""
IPA_BITS = 40
MAX_VMAS = 8


class Draw(Protocol):
    """The choices a generator makes; hypothesis (shrinkable) or random.Random (fast) behind."""

    def integers(self, lo: int, hi: int) -> int: ...
    def choice(self, items: Sequence[T]) -> T: ...
    def boolean(self) -> bool: ...
    def subset(self, items: Sequence[T]) -> list[T]: ...
    def int_set(self, lo: int, hi: int, max_size: int) -> set[int]: ...

class RandomDraw:
    """Choices drawn from random.Random: uniform and fast, for the long campaign."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integers(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def choice(self, items: Sequence[T]) -> T:
        return self.rng.choice(items)

    def boolean(self) -> bool:
        return self.rng.random() < 0.5

    def subset(self, items: Sequence[T]) -> list[T]:
        return [x for x in items if self.rng.random() < 0.5]

    def int_set(self, lo: int, hi: int, max_size: int) -> set[int]:
        return {self.rng.randint(lo, hi) for _ in range(self.rng.randint(0, max_size))}


@dataclass(frozen=True)
class Reach:
    """What the generator may draw (the lists are drawn from, repeats weigh a choice).

    host_features: fixed host features, or None to draw them (and MTE) at random;
    pa_bits: the host PA sizes drawn from; vma_kinds, hugetlb_sizes, accesses, host_ops:
    the choices of those events; registers: the syndrome registers an access may name;
    stage1: a vCPU with stage-1 tables and accesses by VA; races: host events raced into
    an access; aborts: raw abort events; vm_caps: the optional VM capabilities drawn
    ("eager_split_chunk", "nisv_to_user", "manual_dirty_log_protect"); impossible: about
    one scenario in eight carries an impossible expectation.
    """

    host_features: tuple[str, ...] | None
    pa_bits: tuple[int, ...]
    vma_kinds: tuple[str, ...]
    hugetlb_sizes: tuple[int, ...]
    accesses: tuple[str, ...]
    registers: tuple[int, ...]
    host_ops: tuple[str, ...]
    stage1: bool
    races: bool
    aborts: bool
    vm_caps: frozenset[str]
    impossible: bool
    thp_zero_page: bool = False
    """Draw [host] thp_zero_page (the huge zero page for THP reads) too."""


FULL = Reach(None, (44, 48, 52), ("anon", "anon", "file", "hugetlb", "pfnmap"),
             (M2, M2, M2, G1), ("read", "write", "exec", "dc"), tuple(range(31)),
             ("munmap", "madvise", "migrate", "hwpoison"), True, True, True,
             frozenset({"eager_split_chunk", "nisv_to_user", "manual_dirty_log_protect"}),
             True)
"""Everything the model runs (the fuzz campaign's and the test suite's reach)."""


class Known(enum.Enum):
    """A failure class known to the project (issue 8) or found by this fuzzer (all fixed now:
    test_fuzz.FIXED holds them; a new one goes here until its fix lands)."""

    PARTIAL_FOLIO = "partial munmap/madvise of a THP or hugetlb folio"
    ODD_SLOT_CLEAR = "clear_dirty_log to the end of a slot whose page count is not a multiple of 64"
    PFNMAP_BEYOND_PA = "PFNMAP pa beyond the host PA size"
    PFNMAP_ABOVE_48 = ("PFNMAP pa above 2^48 on a 52-bit host (new: found by this fuzzer, "
                       "tests/scenario/test_fuzz_found.py)")
    PERM_ABORT_WARN = ("a raw permission abort on an IPA whose leaf needs a new table: "
                       "user_mem_abort skips the memcache top-up for permission faults, so "
                       "a vCPU that never topped up WARNs in kvm_mmu_memory_cache_alloc (the "
                       "warn invariant; the kernel does the same for such an abort)")


@dataclass(frozen=True)
class Generated:
    """One generated scenario file and what it asks for."""

    text: str
    failing_event: int | None
    """The [[event]] index carrying an impossible expectation, or None (all must hold)."""
    known: frozenset[Known]
    """Known failure classes this scenario may hit."""
    must_refuse: bool = False
    """The file holds a value out of range for the host (a PFNMAP BAR beyond its usable PA
    size: its PARange, or 48 bits with 4K pages without FEAT_LPA2): the run must refuse it
    (exit 2, one line)."""


@dataclass
class VmaState:
    """The generator's view of one VMA (clipped by munmap as the timeline goes)."""

    number: int
    start: int
    end: int
    kind: str
    thp: bool
    hugetlb: int
    mem_type: str
    writable: bool
    pa: int
    folio: int
    """The largest folio the host may back it with (fixed at mmap: pieces keep it)."""
    tainted: bool = False
    """A page of it was unmapped, poisoned, raced or migrated: promise nothing about it."""


@dataclass
class SlotState:
    """A memslot the generator knows to exist (its creation cannot be refused)."""

    id: int
    gpa: int
    size: int
    hva: int
    flags: tuple[str, ...]
    logging: bool = False


@dataclass
class Model:
    """What the generator knows of the timeline so far."""

    fwb_dic: bool
    manual_protect: bool
    reach: Reach
    mte: bool
    pa_bits: int
    vmas: list[VmaState] = field(default_factory=list)
    slots: dict[int, SlotState] = field(default_factory=dict)
    next_vma: int = 0
    next_gpa: int = 0
    next_slot: int = 0
    va_maps: list[tuple[int, int]] = field(default_factory=list)
    known: set[Known] = field(default_factory=set)

    def vma_at(self, hva: int) -> VmaState | None:
        return next((v for v in self.vmas if v.start <= hva < v.end), None)

    def fresh_gpa(self) -> int:
        gpa = GPA_BASE + self.next_gpa * GPA_STRIDE
        self.next_gpa += 1
        return gpa


def toml_value(v: object) -> str:
    """Return v as TOML (ints in hex, as scenario files write addresses)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return hex(v)
    if isinstance(v, str):
        return '"' + v + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" if k.isidentifier() else
                                f'"{k}" = {toml_value(x)}' for k, x in v.items()) + " }"
    raise TypeError(v)


def table(header: str, fields: dict[str, object]) -> str:
    """Return one TOML table."""
    return "\n".join([header] + [f"{k} = {toml_value(v)}" for k, v in fields.items()]) + "\n"


# -- the pieces ---------------------------------------------------------------------------------

def folio_size(kind: str, thp: bool, hugetlb: int, size: int) -> int:
    """Return the largest folio the host model backs such a VMA with."""
    if kind == "hugetlb":
        return hugetlb
    return M2 if kind == "anon" and thp and size % M2 == 0 else PAGE


def vma_fields(d: Draw, m: Model, allow: frozenset[Known]) -> dict[str, object]:
    """Draw one VMA at the next free HVA region; record it in the model."""
    number = m.next_vma
    m.next_vma += 1
    kind = d.choice(m.reach.vma_kinds)
    hugetlb = d.choice(m.reach.hugetlb_sizes) if kind == "hugetlb" else 0
    unit = hugetlb or d.choice([PAGE, M2])
    size = unit * d.integers(1, 4 if unit < G1 else 1)
    start = HVA_BASE + number * HVA_STRIDE
    f: dict[str, object] = {"name": f"vma{number}", "start": start, "size": size, "kind": kind}
    thp = kind == "anon" and d.boolean()
    if thp:
        f["thp"] = True
    if kind == "hugetlb":
        f["hugetlb"] = "1G" if hugetlb == G1 else "2M"
    mem_type, pa = "normal", 0
    if kind == "pfnmap":
        mem_type = d.choice(["normal", "normal-nc", "device"])
        f["mem_type"] = mem_type
        if mem_type == "normal-nc" and d.boolean():
            f["allow_any_uncached"] = True
        beyond = Known.PFNMAP_BEYOND_PA in allow and d.integers(0, 5) == 0
        top = m.pa_bits - 2 if Known.PFNMAP_ABOVE_48 in allow else min(m.pa_bits, 48) - 2
        pa = (1 << (m.pa_bits if beyond else top)) + number * (1 << 28)
        if pa >> m.pa_bits:
            m.known.add(Known.PFNMAP_BEYOND_PA)
        elif pa >> 48:
            m.known.add(Known.PFNMAP_ABOVE_48)
        f["pa"] = pa
    writable = d.integers(0, 7) != 0
    if not writable:
        f["writable"] = False
    if m.mte:
        f["mte_allowed"] = True
    m.vmas.append(VmaState(number, start, start + size, kind, thp, hugetlb, mem_type, writable,
                           pa, folio_size(kind, thp, hugetlb, size)))
    return f


def slot_accepted(m: Model, hva: int, size: int, flags: tuple[str, ...]) -> bool:
    """Return whether KVM surely accepts a new slot there (kvm_arch_prepare_memory_region)."""
    for v in m.vmas:
        if v.start < hva + size and hva < v.end and v.kind == "pfnmap":
            if "log_dirty_pages" in flags:
                return False
            if v.mem_type == "normal" and not m.fwb_dic:
                return False
    return True


def new_slot(d: Draw, m: Model) -> dict[str, object]:
    """Draw a memslot over (part of) a VMA, or over a hole; record it if KVM accepts it."""
    sid = m.next_slot
    m.next_slot += 1
    gpa = m.fresh_gpa()
    live = [v for v in m.vmas if v.end > v.start]
    if live and d.integers(0, 9):
        v = d.choice(live)
        pages = (v.end - v.start) // PAGE
        whole = d.boolean()
        first = 0 if whole else d.integers(0, pages - 1)
        npages = pages - first if whole else d.integers(1, pages - first)
        hva = v.start + first * PAGE
    else:
        hva, npages = HVA_BASE + (MAX_VMAS + 1 + sid) * HVA_STRIDE, d.integers(1, 600)
    flags = tuple(d.subset(["log_dirty_pages", "readonly"]))
    size = npages * PAGE
    f: dict[str, object] = {"id": sid, "gpa": gpa, "size": size, "hva": hva}
    if flags:
        f["flags"] = list(flags)
    if slot_accepted(m, hva, size, flags):
        f["expect_error"] = "none"
        m.slots[sid] = SlotState(sid, gpa, size, hva, flags, "log_dirty_pages" in flags)
    return f


def healthy(m: Model, slot: SlotState, gpa: int, write: bool) -> bool:
    """Return whether an access to gpa must complete (backed, untouched RAM, writable)."""
    if "readonly" in slot.flags or m.mte:
        return False
    v = m.vma_at(slot.hva + gpa - slot.gpa)
    if v is None or v.tainted or v.kind == "pfnmap" or (write and not v.writable):
        return False
    return True


def page_in(d: Draw, npages: int) -> int:
    """Draw a page number below npages, often one of a few hot pages (so pages share folios)."""
    hot = [p for p in (0, 1, 2, 3, 511, 512, 513) if p < npages]
    return d.choice(hot) if d.boolean() else d.integers(0, npages - 1)


def slot_ipa(d: Draw, m: Model) -> tuple[SlotState | None, int]:
    """Draw an IPA: in a live slot (mostly), or in a hole."""
    if m.slots and d.integers(0, 5):
        s = d.choice(sorted(m.slots.values(), key=lambda s: s.id))
        return s, s.gpa + page_in(d, s.size // PAGE) * PAGE + d.choice([0, 8, 0xFF8])
    return None, HOLE_IPA + d.integers(0, 15) * PAGE


def hva_range(d: Draw, m: Model, allow: frozenset[Known]) -> tuple[VmaState, int, int]:
    """Draw a page-aligned HVA range inside a live VMA (folio-aligned unless allowed)."""
    v = d.choice([v for v in m.vmas if v.end > v.start])
    unit = PAGE if Known.PARTIAL_FOLIO in allow else v.folio
    units = (v.end - v.start) // unit
    first = page_in(d, units)
    n = (1 if d.boolean() else d.integers(1, units - first))
    start, size = v.start + first * unit, n * unit
    if start % v.folio or size % v.folio:
        m.known.add(Known.PARTIAL_FOLIO)
    return v, start, size


def hugetlb_split(v: VmaState, start: int, size: int) -> bool:
    """Return whether the range splits a hugetlb page (the kernel's -EINVAL: nothing unmapped)."""
    return v.kind == "hugetlb" and bool(start % v.folio or size % v.folio)


def clip(m: Model, start: int, end: int) -> None:
    """munmap [start, end) in the model: VMAs shrink or split (pieces stay tainted)."""
    kept: list[VmaState] = []
    for v in m.vmas:
        if v.end <= start or v.start >= end:
            kept.append(v)
            continue
        for a, b in ((v.start, min(v.end, start)), (max(v.start, end), v.end)):
            if a < b:
                kept.append(VmaState(v.number, a, b, v.kind, v.thp, v.hugetlb, v.mem_type,
                                     v.writable, v.pa + (a - v.start), v.folio, True))
    m.vmas = kept


def access_event(d: Draw, m: Model, allow: frozenset[Known]) -> dict[str, object]:
    """Draw a guest access by IPA (MMU off) or by VA (through the vCPU's stage 1)."""
    do = d.choice(m.reach.accesses)
    f: dict[str, object] = {"do": do}
    slot, ipa = None, 0
    if m.va_maps and d.boolean():  # (no maps without reach.stage1)
        va, size = d.choice(m.va_maps)
        f["va"] = va + d.integers(0, size // PAGE - 1) * PAGE
    else:
        slot, ipa = slot_ipa(d, m)
        f["ipa"] = ipa
    if do in ("read", "write") and d.integers(0, 3) == 0:
        f["syndrome"] = [d.choice([1, 2, 4, 8]), d.choice(m.reach.registers)]
    live = [v for v in m.vmas if v.end > v.start]
    if m.reach.races and live and d.integers(0, 5) == 0:
        kind = d.choice(m.reach.host_ops)
        v, start, size = hva_range(d, m, allow)
        f["race"] = {"do": kind, "hva": start, "size": size}
        v.tainted = True
        if kind == "munmap" and not hugetlb_split(v, start, size):
            clip(m, start, start + size)
        slot = None
    if slot is not None and do in ("read", "write") and healthy(m, slot, ipa, do == "write"):
        f["expect"] = "completed"
    return f


def host_event(d: Draw, m: Model, allow: frozenset[Known]) -> dict[str, object]:
    """Draw munmap / madvise / migrate / hwpoison inside a live VMA."""
    do = d.choice(m.reach.host_ops)
    v, start, size = hva_range(d, m, allow)
    v.tainted = True
    if do in ("migrate", "hwpoison"):
        return {"do": do, "hva": start}
    if do == "munmap" and not hugetlb_split(v, start, size):
        clip(m, start, start + size)
    return {"do": do, "hva": start, "size": size}


def slot_event(d: Draw, m: Model) -> dict[str, object]:
    """Draw a memslot ioctl: create, change flags, move or delete."""
    do = d.choice(["memslot", "memslot", "move_memslot", "delete_memslot"])
    if not m.slots or (do == "memslot" and d.boolean()):
        new = new_slot(d, m)
        return {"do": "memslot", "slot": new.pop("id"), **new}
    s = d.choice(sorted(m.slots.values(), key=lambda s: s.id))
    if do == "delete_memslot":
        del m.slots[s.id]
        return {"do": do, "slot": s.id, "expect_error": "none"}
    if do == "move_memslot":
        s.gpa = m.fresh_gpa()
        return {"do": do, "slot": s.id, "gpa": s.gpa, "expect_error": "none"}
    logging = d.boolean()
    flags = [x for x in s.flags if x == "readonly"] + (["log_dirty_pages"] if logging else [])
    f: dict[str, object] = {"do": "memslot", "slot": s.id, "flags": flags}
    if slot_accepted(m, s.hva, s.size, tuple(flags)):
        s.flags, s.logging = tuple(flags), logging
        f["expect_error"] = "none"
    return f


def dirty_event(d: Draw, m: Model, allow: frozenset[Known]) -> dict[str, object]:
    """Draw dirty_log_enable / _disable / get_dirty_log / clear_dirty_log on a live slot."""
    s = d.choice(sorted(m.slots.values(), key=lambda s: s.id))
    do = d.choice(["dirty_log_enable", "dirty_log_disable", "get_dirty_log",
                               "clear_dirty_log"])
    if do != "clear_dirty_log":
        if do != "get_dirty_log" and slot_accepted(
                m, s.hva, s.size, ("log_dirty_pages",) if do == "dirty_log_enable" else ()):
            s.logging = do == "dirty_log_enable"
        return {"do": do, "slot": s.id}
    npages = s.size // PAGE
    first = 64 * d.integers(0, (npages - 1) // 64)
    f: dict[str, object] = {"do": do, "slot": s.id, "first_page": first}
    to_end = d.boolean()
    num = npages - first if to_end else 64 * d.integers(1, max(1, (npages - first) // 64))
    if to_end and num % 64:
        if Known.ODD_SLOT_CLEAR not in allow:
            num -= num % 64
            if num == 0:
                return {"do": "get_dirty_log", "slot": s.id}
        else:
            m.known.add(Known.ODD_SLOT_CLEAR)
    if to_end and num == npages - first and d.boolean():
        pass  # num_pages left out: the runner clears to the end of the slot
    else:
        f["num_pages"] = num
    if d.boolean():
        f["pages"] = sorted(d.int_set(first, first + num - 1, 4))
    return f


FSCS = [0x04, 0x05, 0x06, 0x07, 0x09, 0x0A, 0x0B, 0x0D, 0x0E, 0x0F]


PERM_FSCS = {0x0D, 0x0E, 0x0F}


def abort_event(d: Draw, m: Model, allow: frozenset[Known]) -> dict[str, object]:
    """Draw a raw Data or Instruction Abort from a lower EL, on a slot's IPA or a hole."""
    _, ipa = slot_ipa(d, m)
    ec = d.choice([0x20, 0x24])
    fsc = d.choice(FSCS)
    if fsc in PERM_FSCS and Known.PERM_ABORT_WARN not in allow:
        fsc -= 0x08  # the translation fault at the same level (the same draws either way)
    if fsc in PERM_FSCS:
        m.known.add(Known.PERM_ABORT_WARN)
    esr = (ec << 26) | (1 << 25) | fsc
    if ec == 0x24 and d.boolean():
        esr |= 1 << 6  # WnR
    return {"do": "abort", "esr": esr, "far": 0x1000 + (ipa & 0xFFF), "hpfar": (ipa >> 12) << 4}


def mmap_event(d: Draw, m: Model, allow: frozenset[Known]) -> dict[str, object]:
    """Draw an mmap of a new VMA at a fresh HVA region."""
    return {"do": "mmap", **vma_fields(d, m, allow)}


def event(d: Draw, m: Model, allow: frozenset[Known]) -> dict[str, object]:
    """Draw one timeline event that can run at this point."""
    kinds = ["access", "access", "access", "slot"] + ["abort"] * m.reach.aborts + ["check"]
    if any(v.end > v.start for v in m.vmas):
        kinds += ["host", "host"]
    if m.slots:
        kinds += ["dirty", "dirty"]
    if m.next_vma < MAX_VMAS:
        kinds.append("mmap")
    kind = d.choice(kinds)
    if kind == "access":
        return access_event(d, m, allow)
    if kind == "host":
        return host_event(d, m, allow)
    if kind == "slot":
        return slot_event(d, m)
    if kind == "dirty":
        return dirty_event(d, m, allow)
    if kind == "abort":
        return abort_event(d, m, allow)
    if kind == "mmap":
        return mmap_event(d, m, allow)
    return {"do": "check", "note": "invariants only"}


IMPOSSIBLE = [("expect_seq", 1 << 40), ("expect_leaves", {"1G": 100000})]

def random_scenario(rng: random.Random, allow: frozenset[Known] = frozenset(Known),
                    max_events: int = 12, reach: Reach = FULL) -> Generated:
    """Return one scenario drawn with rng (the campaigns' front end)."""
    return generate(RandomDraw(rng), allow, max_events, reach)


def generate(d: Draw, allow: frozenset[Known], max_events: int,
             reach: Reach = FULL) -> Generated:
    """Draw a whole valid scenario file; about one in eight carries an impossible expectation
    (when the reach allows)."""
    if reach.host_features is None:
        features = d.subset(["fwb", "dic", "idc", "tlb_range", "mte"])
    else:
        features = list(reach.host_features)
    pa_bits = d.choice(reach.pa_bits)
    mte = "mte" in features and d.boolean()
    manual = "manual_dirty_log_protect" in reach.vm_caps and d.boolean()
    m = Model("fwb" in features and "dic" in features, manual, reach, mte, pa_bits)
    host: dict[str, object] = {"features": features, "pa_bits": pa_bits}
    if reach.thp_zero_page and d.boolean():
        host["thp_zero_page"] = True
    vm: dict[str, object] = {"ipa_bits": IPA_BITS}
    if mte:
        vm["mte"] = True
    if manual:
        vm["manual_dirty_log_protect"] = True
        if d.boolean():
            vm["initially_set"] = True
    if "eager_split_chunk" in reach.vm_caps and d.boolean():
        vm["eager_split_chunk"] = d.choice([0, "4K", "2M", "1G"])
    if "nisv_to_user" in reach.vm_caps and d.boolean():
        vm["nisv_to_user"] = True
    parts = ["name = \"generated\"\n", table("[host]", host), table("[vm]", vm)]
    ram = d.choice([M2, 2 * M2])
    thp = d.boolean()
    parts.append(table("[[vma]]", {"name": "ram", "start": HVA_BASE, "size": ram, "thp": thp,
                                   **({"mte_allowed": True} if mte else {})}))
    m.vmas.append(VmaState(0, HVA_BASE, HVA_BASE + ram, "anon", thp, 0, "normal", True, 0,
                           folio_size("anon", thp, 0, ram)))
    m.next_vma = 1
    for _ in range(d.integers(0, 3)):
        parts.append(table("[[vma]]", vma_fields(d, m, allow)))
    ram_gpa = m.fresh_gpa()
    log = d.boolean()
    parts.append(table("[[memslot]]", {"id": 0, "gpa": ram_gpa, "size": ram, "hva": HVA_BASE,
                                       "flags": ["log_dirty_pages"] if log else [],
                                       "expect_error": "none"}))
    m.slots[0] = SlotState(0, ram_gpa, ram, HVA_BASE, ("log_dirty_pages",) if log else (), log)
    m.next_slot = 1
    for _ in range(d.integers(0, 3)):
        parts.append(table("[[memslot]]", new_slot(d, m)))
    if reach.stage1 and d.boolean():
        parts.append(vcpu_table(d, m, ram_gpa, ram))
    events = [event(d, m, allow) for _ in range(d.integers(1, max_events))]
    failing = None
    if reach.impossible and d.integers(0, 7) == 0:
        failing = d.integers(0, len(events) - 1)
        key, value = d.choice(IMPOSSIBLE)
        events[failing][key] = value
    parts += [table("[[event]]", e) for e in events]
    return Generated("\n".join(parts), failing, frozenset(m.known),
                     must_refuse=bool(m.known & {Known.PFNMAP_BEYOND_PA, Known.PFNMAP_ABOVE_48}))


def vcpu_table(d: Draw, m: Model, ram_gpa: int, ram: int) -> str:
    """Draw vCPU 0 with a stage 1 in the last 64K of RAM mapping VAs onto slots and a hole."""
    maps = []
    targets = [(s.gpa, s.size) for s in m.slots.values()] + [(HOLE_IPA, PAGE)]
    for i in range(d.integers(1, 3)):
        gpa, size = d.choice(targets)
        size = min(size, M2) & ~(PAGE - 1)
        va = 0x4000_0000 + i * 0x4000_0000
        mp: dict[str, object] = {"va": va, "ipa": gpa, "size": size}
        if d.integers(0, 3) == 0:
            mp["ro"] = True
        if d.integers(0, 3) == 0:
            mp["device"], mp["xn"] = True, True
        maps.append(mp)
        m.va_maps.append((va, size))
    text = table("[[vcpu]]", {"id": 0, "stage1_tables": ram_gpa + ram - 0x10000})
    return text + "map = [\n" + ",\n".join("  " + toml_value(x) for x in maps) + ",\n]\n"


