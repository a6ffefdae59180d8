"""Drive the kernel's pgtable.c and the model side by side and compare after every operation.

A run is a number of random sequences, each on a fresh stage 2 on both sides (the
library's granule: 4K, 16K or 64K, the host PAGE_SIZE it was built with; a 40-bit IPA
unless the caller picks another size from 32 to 48 bits, so that kvm_get_vtcr's start
level and PGD concatenation change with it; 16-bit VMID). Table
pages come from the model's page pool; the kernel side gets the same pages in its
memcaches, so descriptor words compare at the same addresses. After every operation the
two sides must agree on:

- the return value (mkyoung's is not compared: 6.12 returns the old descriptor, the
  model's API returns nothing, as the kernel's does from v6.15); for kvm_pgtable_get_leaf
  the entry and level too; for a walk with a visitor (kvm_pgtable_walk with LEAF,
  TABLE_PRE, TABLE_POST, and from 6.12 SHARED and HANDLE_FAULT) every visitor call in
  order: the visit, level, address, the descriptor the visitor saw and the walk flags.
  The visitor can return an error at a chosen call (which ends the walk, or not, by the
  profile's -EAGAIN rule) and clear its entry at a chosen call (the re-read after LEAF
  and TABLE_PRE then decides whether the walk descends);
- every page with a reference: its refcount and all its descriptor words (table pages,
  the PGD, the pages the memcaches hold), and what each memcache still holds;
- the ordered events: TLBIs (VMID, IPA, level hint, NSH), DSB/ISB, CMOs, page allocations
  and WARNs (by function), with page frees compared as a sorted list, since the kernel
  side frees RCU-deferred tables at the end of the operation and the model when the walk
  that detached them ends. relax_perms's TLBI level hint on -EAGAIN is not compared
  (6.12 passes an uninitialised level there).

The first difference in a sequence ends it; it is shrunk to a minimal sequence of
operations that still shows it, printed as replayable text (:func:`parse_ops`).

Against Linux 6.1 (the pre-v6.3 profile) the operations are those 6.1 has: no split,
test_clear_young of one page as kvm_pgtable_stage2_mkold/_is_young, no Normal-NC prot,
and no walk flags anywhere (6.1's stage-2 walks are not shared: the fault path passes
none, so the model gets none either).

An empty memcache WARNs and falls back to an atomic allocation on both sides
(kvm_mmu_memory_cache_alloc); the glue's atomic pages are the ones the model's pool hands
out next.

Kernel: the kvm_pgtable_stage2_* functions, kvm_pgtable_walk and kvm_pgtable_get_leaf of
arch/arm64/kvm/hyp/pgtable.c (6.12, 6.1) and their callers' flags (user_mem_abort:
HANDLE_FAULT | SHARED in 6.12, none in 6.1); kvm_mmu_memory_cache_alloc (virt/kvm).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from s2mmu.arch.errors import InputError
from s2mmu.kernel.binding import KernelEvent, KernelPgtable, Visit
from s2mmu.pgtable.callers import fault_walk_flags
from s2mmu.pgtable.caps import KvmCaps
from s2mmu.pgtable.env import PgtableEnv, new_env, new_stage2, stage2_cache_min_pages
from s2mmu.pgtable.errno import E2BIG, EAGAIN, EINVAL, ENOMEM, EPERM
from s2mmu.pgtable.events import TLBI_TTL_UNKNOWN, PageFree, TlbiVmidIpa, Warn
from s2mmu.pgtable.mm import KvmMmuMemoryCache, kvm_mmu_topup_memory_cache
from s2mmu.pgtable.profile import BehaviourProfile
from s2mmu.pgtable.prot import KvmPgtableProt
from s2mmu.pgtable.stage2 import (
    kvm_pgtable_stage2_create_unlinked,
    kvm_pgtable_stage2_flush,
    kvm_pgtable_stage2_map,
    kvm_pgtable_stage2_mkyoung,
    kvm_pgtable_stage2_relax_perms,
    kvm_pgtable_stage2_set_owner,
    kvm_pgtable_stage2_split,
    kvm_pgtable_stage2_test_clear_young,
    kvm_pgtable_stage2_unmap,
    kvm_pgtable_stage2_wrprotect,
)
from s2mmu.pgtable.steps import Gen
from s2mmu.pgtable.table import KvmPgtable
from s2mmu.pgtable.walk import (
    KVM_PGTABLE_WALK_HANDLE_FAULT,
    KvmPgtableVisitCtx,
    KvmPgtableWalker,
    kvm_pgtable_get_leaf,
    kvm_pgtable_walk,
)

SZ_4K, SZ_2M, SZ_1G = 1 << 12, 1 << 21, 1 << 30
POOL_BASE = 0x80_0000_0000
IPA_BITS = 40
IPA_BITS_RANGE = (32, 48)  # the random operations stay below 4G; PARange is 48 bits
VMID = 1
MMFR0 = 5  # PARange 48 bits
MMFR1 = 0b0010 << 4  # VMIDBits: 16

# 6.12's enum kvm_pgtable_prot and walk flags (asm/kvm_pgtable.h).
K_PROT_X, K_PROT_W, K_PROT_R, K_PROT_DEVICE, K_PROT_NORMAL_NC = 1, 2, 4, 8, 16
K_WALK_LEAF, K_WALK_TABLE_PRE, K_WALK_TABLE_POST = 1 << 0, 1 << 1, 1 << 2
K_WALK_SHARED, K_WALK_HANDLE_FAULT = 1 << 3, 1 << 4
WALK_FLAG_NAMES = {"LEAF": K_WALK_LEAF, "TABLE_PRE": K_WALK_TABLE_PRE,
                   "TABLE_POST": K_WALK_TABLE_POST, "SHARED": K_WALK_SHARED,
                   "HANDLE_FAULT": K_WALK_HANDLE_FAULT}
"""The walk flags a visitor walk may pass, in 6.12's encoding (6.1 has the first three)."""
ERRNOS = {"EAGAIN": EAGAIN, "EINVAL": EINVAL, "ENOMEM": ENOMEM, "E2BIG": E2BIG,
          "EPERM": EPERM}
"""The errors a visitor may return (negated)."""

PROT_NAMES = {"R": K_PROT_R, "W": K_PROT_W, "X": K_PROT_X}
MEMTYPES = {"": 0, "DEVICE": K_PROT_DEVICE, "NC": K_PROT_NORMAL_NC}
RANDOM_OP_NAMES = ("map", "set_owner", "unmap", "wrprotect", "relax_perms", "mkyoung",
                   "test_clear_young", "split", "flush", "walk", "get_leaf")
OP_NAMES = (*RANDOM_OP_NAMES, "create_unlinked")
"""Every operation; create_unlinked (6.12 on) only in replays and named scenarios, so that
a seed's random sequences stay what they were."""


@dataclass(frozen=True)
class Op:
    """One operation with its arguments (prot in 6.12's encoding)."""

    name: str
    addr: int
    size: int = SZ_4K
    phys: int = 0
    prot: int = 0
    fault: bool = False
    mkold: bool = False
    owner: int = 0
    split_cache: int = 0
    level: int = 0
    force_pte: bool = False
    walk_flags: int = 0
    fail_at: int = 0
    fail_ret: int = 0
    zap_at: int = 0

    def __str__(self) -> str:
        match self.name:
            case "walk":
                return (f"walk {self.addr:#x} {self.size:#x} {walk_flags_text(self.walk_flags)}"
                        + (f" fail@{self.fail_at}={errno_text(self.fail_ret)}"
                           if self.fail_at else "")
                        + (f" zap@{self.zap_at}" if self.zap_at else ""))
            case "get_leaf":
                return f"get_leaf {self.addr:#x}"
            case "map":
                return (f"map {self.addr:#x} {self.size:#x} {self.phys:#x} {prot_text(self.prot)}"
                        + (" fault" if self.fault else ""))
            case "set_owner":
                return f"set_owner {self.addr:#x} {self.size:#x} {self.owner}"
            case "relax_perms":
                return f"relax_perms {self.addr:#x} {prot_text(self.prot)}"
            case "mkyoung":
                return f"mkyoung {self.addr:#x}"
            case "test_clear_young":
                return f"test_clear_young {self.addr:#x} {self.size:#x} {int(self.mkold)}"
            case "split":
                return f"split {self.addr:#x} {self.size:#x} {self.split_cache}"
            case "create_unlinked":
                return (f"create_unlinked {self.phys:#x} {self.level} {prot_text(self.prot)}"
                        + (" force" if self.force_pte else ""))
            case _:
                return f"{self.name} {self.addr:#x} {self.size:#x}"


def walk_flags_text(flags: int) -> str:
    """Return walk flags as text: "LEAF|TABLE_POST", "-" for none."""
    return "|".join(n for n, b in WALK_FLAG_NAMES.items() if flags & b) or "-"


def parse_walk_flags(text: str) -> int:
    """Return the walk flags of a text like "LEAF|SHARED", or raise InputError."""
    names = [n for n in text.split("|") if n and n != "-"]
    bad = [n for n in names if n not in WALK_FLAG_NAMES]
    if bad:
        raise InputError(f"replay: walk flag {bad[0]!r} is not one of "
                         f"{', '.join(WALK_FLAG_NAMES)}")
    return sum(WALK_FLAG_NAMES[n] for n in set(names))


def errno_text(ret: int) -> str:
    """Return a negative errno as "-EAGAIN" (or its number)."""
    return next((f"-{n}" for n, v in ERRNOS.items() if -v == ret), str(ret))


def parse_errno(text: str) -> int:
    """Return the negative errno of "-EAGAIN" (or of a number), or raise InputError."""
    name = text.lstrip("-")
    if name in ERRNOS:
        return -ERRNOS[name]
    try:
        return int(text, 0)
    except ValueError:
        raise InputError(f"replay: error {text!r} is not -NAME ({', '.join(ERRNOS)}) "
                         "or a number") from None


def prot_text(prot: int) -> str:
    """Return a prot as text: "RWX", "R+DEVICE", "-" for none."""
    perms = "".join(n for n, b in PROT_NAMES.items() if prot & b) or "-"
    mem = next((n for n, b in MEMTYPES.items() if b and prot & b), "")
    return perms + (f"+{mem}" if mem else "")


def parse_prot(text: str) -> int:
    """Return the prot of a text like "RW" or "RW+DEVICE", or raise InputError."""
    perms, _, mem = text.partition("+")
    if mem not in MEMTYPES or any(c not in PROT_NAMES for c in perms.replace("-", "")):
        raise InputError(f"replay: prot {text!r} is not PERMS[+DEVICE|+NC] (PERMS from R, W, X)")
    return sum(PROT_NAMES[c] for c in set(perms.replace("-", ""))) | MEMTYPES[mem]


def parse_ops(text: str) -> list[Op]:
    """Return the operations of a replay text (as a difference prints it; ';' or newlines)."""
    ops = []
    for raw in text.replace(";", "\n").splitlines():
        words = raw.split()
        if not words:
            continue
        name, args = words[0], words[1:]
        try:
            ops.append(_parse_op(name, args))
        except InputError:
            raise
        except (ValueError, IndexError):
            raise InputError(f"replay: cannot read operation {raw.strip()!r}") from None
    return ops


def _parse_op(name: str, a: list[str]) -> Op:
    n = [int(x, 0) for x in a if x[:1].isdigit()]
    match name:
        case "map":
            return Op("map", n[0], n[1], n[2], parse_prot(a[3]), fault=a[4:] == ["fault"])
        case "set_owner":
            return Op("set_owner", n[0], n[1], owner=n[2])
        case "relax_perms":
            return Op("relax_perms", n[0], prot=parse_prot(a[1]))
        case "mkyoung":
            return Op("mkyoung", n[0])
        case "test_clear_young":
            return Op("test_clear_young", n[0], n[1], mkold=bool(n[2]))
        case "split":
            return Op("split", n[0], n[1], split_cache=n[2])
        case "create_unlinked":
            return Op("create_unlinked", 0, phys=n[0], level=n[1], prot=parse_prot(a[2]),
                      force_pte=a[3:] == ["force"])
        case "unmap" | "wrprotect" | "flush":
            return Op(name, n[0], n[1])
        case "walk":
            return _parse_walk(a)
        case "get_leaf":
            return Op("get_leaf", n[0])
    raise InputError(f"replay: unknown operation {name!r}; one of {', '.join(OP_NAMES)}")


def _parse_walk(a: list[str]) -> Op:
    """walk ADDR SIZE FLAGS [fail@N=-ERRNO] [zap@N]."""
    op = Op("walk", int(a[0], 0), int(a[1], 0), walk_flags=parse_walk_flags(a[2]))
    for word in a[3:]:
        key, _, rest = word.partition("@")
        if key == "fail":
            at, _, err = rest.partition("=")
            op = replace(op, fail_at=int(at), fail_ret=parse_errno(err))
        elif key == "zap":
            op = replace(op, zap_at=int(rest))
        else:
            raise InputError(f"replay: walk takes fail@N=-ERRNO and zap@N, not {word!r}")
    return op


# ---------------------------------------------------------------------------------------
# Random operations.


@dataclass(frozen=True)
class Geometry:
    """Where random operations land for one granule: pages, level-2 blocks (2M, 32M,
    512M) in six slots, and for 4K one level-1 (1G) block slot; the page pool's size."""

    page_shift: int

    @property
    def page(self) -> int:
        """The page size."""
        return 1 << self.page_shift

    @property
    def ptrs(self) -> int:
        """Entries per table page."""
        return self.page // 8

    @property
    def block(self) -> int:
        """The level-2 block size."""
        return 1 << (2 * (self.page_shift - 3) + 3)

    @property
    def big_block(self) -> int | None:
        """The level-1 block size, 4K only (KVM_PGTABLE_MIN_BLOCK_LEVEL is 2 otherwise)."""
        return 1 << (3 * (self.page_shift - 3) + 3) if self.page_shift == 12 else None

    @property
    def slots(self) -> tuple[int, ...]:
        """Six level-2 block slots from IPA 0."""
        return tuple(i * self.block for i in range(6))

    @property
    def pool_pages(self) -> int:
        """Pages in the pool (32 MiB whatever the granule)."""
        return (32 << 20) >> self.page_shift


GRANULE_NAMES = {12: "4k", 14: "16k", 16: "64k"}

PROTS = (K_PROT_R, K_PROT_R | K_PROT_W, K_PROT_R | K_PROT_X, K_PROT_R | K_PROT_W | K_PROT_X,
         K_PROT_R | K_PROT_W | K_PROT_DEVICE, K_PROT_R | K_PROT_W | K_PROT_NORMAL_NC,
         K_PROT_W, K_PROT_X, K_PROT_R | K_PROT_X | K_PROT_DEVICE)


SERIES_6_1 = 601
"""KG_LINUX of Linux 6.1: the pgtable.c interfaces before parallel faults (v6.2)."""

GEO_4K = Geometry(12)
POOL_PAGES = GEO_4K.pool_pages
"""The 4K page pool's size (Geometry.pool_pages for the others)."""


def random_op(rng: random.Random, series: int = 612, geo: Geometry = GEO_4K) -> Op:
    """Return one random operation over a few level-2 slots and (4K) one 1G slot.

    For a 6.1 library only what 6.1 has: no split, test_clear_young of one page, no
    Normal-NC prot, no fault flags, walks with LEAF/TABLE_PRE/TABLE_POST only.
    """
    old = series <= SERIES_6_1
    slot = rng.choice(geo.slots)
    page = slot + rng.randrange(geo.ptrs) * geo.page
    ranged = rng.choice((geo.page, geo.page * rng.randint(2, 8), geo.block, 2 * geo.block))
    kind = rng.choices(RANDOM_OP_NAMES,
                       weights=(40, 3, 12, 8, 10, 5, 6, 0 if old else 6, 3, 8, 3))[0]
    prot = rng.choice([p for p in PROTS if not (old and p & K_PROT_NORMAL_NC)])
    if kind == "map" and old:
        return replace(_random_map(rng, slot, page, prot, geo), fault=False)
    if kind == "map":
        return _random_map(rng, slot, page, prot, geo)
    big = geo.big_block
    if kind in ("unmap", "wrprotect", "flush") and big is not None and rng.random() < 0.1:
        return Op(kind, 2 * big + rng.randrange(geo.ptrs) * geo.block, ranged)
    match kind:
        case "set_owner":
            return Op(kind, page, rng.choice((geo.page, geo.page * 4)),
                      owner=rng.choice((0, 1, 1, 2)))
        case "relax_perms":
            return Op(kind, page, prot=prot)
        case "mkyoung" | "get_leaf":
            return Op(kind, page)
        case "test_clear_young":
            return Op(kind, page, geo.page if old else ranged, mkold=rng.random() < 0.7)
        case "split":
            return Op(kind, slot, rng.choice((geo.block, 2 * geo.block)),
                      split_cache=rng.choice((0, 1, 2, 4)))
        case "walk":
            return _random_walk(rng, page, ranged, old)
    return Op(kind, page, ranged)


def _random_walk(rng: random.Random, addr: int, size: int, old: bool) -> Op:
    """Return a visitor walk: random visit flags (and from 6.12 SHARED, HANDLE_FAULT), an
    error at a random call now and then, an entry cleared at a random call now and then."""
    flags = sum(b for b in (K_WALK_LEAF, K_WALK_TABLE_PRE, K_WALK_TABLE_POST)
                if rng.random() < 0.6)
    if not old:
        flags |= sum(b for b in (K_WALK_SHARED, K_WALK_HANDLE_FAULT) if rng.random() < 0.4)
    op = Op("walk", addr, size, walk_flags=flags)
    if rng.random() < 0.35:
        op = replace(op, fail_at=rng.randint(1, 6),
                     fail_ret=-rng.choice((EAGAIN, EAGAIN, EINVAL, ENOMEM)))
    if rng.random() < 0.2:
        op = replace(op, zap_at=rng.randint(1, 6))
    return op


def _random_map(rng: random.Random, slot: int, page: int, prot: int,
                geo: Geometry = GEO_4K) -> Op:
    """Return a random map of a page, a few pages, a level-2 block or (4K) the 1G block."""
    big = geo.big_block
    shape = rng.choices(("page", "pages", "2M", "1G"), weights=(50, 15, 30, 3 if big else 0))[0]
    phys_base = 0x1_0000_0000 + rng.randrange(4) * SZ_1G
    if shape == "1G" and big is not None:
        return Op("map", 2 * big, big, phys_base, prot, fault=rng.random() < 0.5)
    if shape == "2M":
        return Op("map", slot, geo.block,
                  phys_base + rng.randrange(max(1, SZ_1G // geo.block)) * geo.block, prot,
                  fault=rng.random() < 0.5)
    size = geo.page if shape == "page" else geo.page * rng.randint(2, 16)
    return Op("map", page, size, phys_base + rng.randrange(SZ_1G // geo.page) * geo.page, prot,
              fault=rng.random() < 0.5)


# ---------------------------------------------------------------------------------------
# The two sides.


def model_prot(prot: int) -> int:
    """Return a 6.12 prot in the model's encoding (X = PX | UX)."""
    out = KvmPgtableProt(0)
    if prot & K_PROT_X:
        out |= KvmPgtableProt.X
    if prot & K_PROT_W:
        out |= KvmPgtableProt.W
    if prot & K_PROT_R:
        out |= KvmPgtableProt.R
    if prot & K_PROT_DEVICE:
        out |= KvmPgtableProt.DEVICE
    if prot & K_PROT_NORMAL_NC:
        out |= KvmPgtableProt.NORMAL_NC
    return int(out)


@dataclass
class Sides:
    """A fresh stage 2 on each side, with their memcaches."""

    kernel: KernelPgtable
    env: PgtableEnv
    pgt: KvmPgtable
    map_mc: KvmMmuMemoryCache = field(default_factory=KvmMmuMemoryCache)
    split_mc: KvmMmuMemoryCache = field(default_factory=KvmMmuMemoryCache)
    events_seen: int = 0


def new_sides(kernel: KernelPgtable, profile: BehaviourProfile, caps: KvmCaps,
              ipa_bits: int = IPA_BITS) -> Sides:
    """Return both sides initialised the same way (the model picks the PGD's pages), with
    the library's granule."""
    geo = Geometry(kernel.page_shift)
    env = new_env(page_shift=geo.page_shift, profile=profile, caps=caps, pool_base=POOL_BASE,
                  pool_pages=geo.pool_pages)
    pgt = new_stage2(env, ipa_bits, vmid=VMID, mmfr0=MMFR0, mmfr1=MMFR1)
    assert pgt.pgd is not None
    ret = kernel.init(pool_base=POOL_BASE, pool_pages=geo.pool_pages, mmfr0=MMFR0, mmfr1=MMFR1,
                      ipa_bits=ipa_bits, vmid=VMID, pgd_pa=pgt.pgd, fwb=caps.stage2_fwb,
                      tlb_range=caps.tlb_range, dic=caps.dic, hw_afdbm=caps.hw_afdbm)
    if ret:
        raise RuntimeError(f"kernel kvm_pgtable_stage2_init failed: {ret}")
    return Sides(kernel, env, pgt)


def _prepare(s: Sides, op: Op) -> None:
    """Top the memcache the operation uses up on the model side and give the kernel the same."""
    if op.name in ("map", "set_owner", "create_unlinked"):
        kvm_mmu_topup_memory_cache(s.map_mc, s.env.pool, stage2_cache_min_pages(s.pgt))
        s.kernel.set_memcache(0, list(s.map_mc.objects))
    elif op.name == "split":
        while s.split_mc.nobjs < op.split_cache:
            pa = s.env.pool.alloc_page()
            if pa is None:
                break
            s.split_mc.objects.append(pa)
        s.kernel.set_memcache(1, list(s.split_mc.objects))
    s.kernel.set_fallback(s.env.pool.next_pages(fallback_pages(op, s.pgt)))
    s.events_seen = len(s.env.events)


def fallback_pages(op: Op, pgt: KvmPgtable) -> int:
    """Return how many atomic allocations op can make on an empty memcache: one per level
    for a map, a table and its children for an unlinked level-1 table forced to pages."""
    if op.name == "create_unlinked":
        return 1 + pgt.ops.g.ptrs_per_pte
    return 4


@dataclass(frozen=True)
class WalkOutcome:
    """A visitor walk's outcome: kvm_pgtable_walk's return value and the visitor's calls."""

    ret: int
    visits: tuple[Visit, ...]


@dataclass(frozen=True)
class LeafOutcome:
    """kvm_pgtable_get_leaf's outcome: its return value, the entry and its level."""

    ret: int
    pte: int
    level: int

    def __str__(self) -> str:
        return f"{self.ret}, {self.pte:#x}, level {self.level}"


Result = int | WalkOutcome | LeafOutcome | None
"""An operation's outcome: its return value, a walk's or get_leaf's record, None for
mkyoung."""


def to_model_walk_flags(flags: int) -> int:
    """Return 6.12-encoded walk flags in the model's encoding (HANDLE_FAULT has its own
    bit there)."""
    out = flags & ~K_WALK_HANDLE_FAULT
    return out | (KVM_PGTABLE_WALK_HANDLE_FAULT if flags & K_WALK_HANDLE_FAULT else 0)


def to_kernel_walk_flags(flags: int) -> int:
    """Return model walk flags in 6.12's encoding (the inverse of to_model_walk_flags)."""
    out = flags & ~KVM_PGTABLE_WALK_HANDLE_FAULT
    return out | (K_WALK_HANDLE_FAULT if flags & KVM_PGTABLE_WALK_HANDLE_FAULT else 0)


def model_walk(s: Sides, op: Op) -> WalkOutcome:
    """Run a visitor walk on the model: kvm_pgtable_walk with a visitor that records each
    call and returns op.fail_ret at call op.fail_at and clears the entry at op.zap_at.

    Against 6.1 the visitor reads the entry itself at each call (6.1's visitors get the
    entry's address, not a context holding the value the walker read)."""
    visits: list[Visit] = []
    reads_entry = s.kernel.series <= SERIES_6_1
    mem = s.env.mem

    def visitor(ctx: KvmPgtableVisitCtx, visit: int) -> Gen[int]:
        old = mem.read64(ctx.ptep) if reads_entry else ctx.old
        visits.append(Visit(visit, ctx.level, ctx.addr, old, to_kernel_walk_flags(ctx.flags)))
        if len(visits) == op.zap_at:
            mem.write64(ctx.ptep, 0)
        return op.fail_ret if len(visits) == op.fail_at else 0
        yield  # pragma: no cover - makes this a generator

    walker = KvmPgtableWalker(visitor, None, to_model_walk_flags(op.walk_flags))
    ret = int(kvm_pgtable_walk(s.pgt, op.addr, op.size, walker))
    return WalkOutcome(ret, tuple(visits))


def run_model(s: Sides, op: Op) -> Result:
    """Run op on the model; return its result (None for mkyoung).

    The fault path's walk flags go to relax_perms, mkyoung and a map marked fault;
    against 6.1, whose walks take no flags, none.
    """
    fault = 0 if s.kernel.series <= SERIES_6_1 else fault_walk_flags(s.env.profile)
    pgt = s.pgt
    match op.name:
        case "map":
            return int(kvm_pgtable_stage2_map(pgt, op.addr, op.size, op.phys, model_prot(op.prot),
                                              s.map_mc, fault if op.fault else 0))
        case "set_owner":
            return int(kvm_pgtable_stage2_set_owner(pgt, op.addr, op.size, s.map_mc, op.owner))
        case "unmap":
            return int(kvm_pgtable_stage2_unmap(pgt, op.addr, op.size))
        case "wrprotect":
            return int(kvm_pgtable_stage2_wrprotect(pgt, op.addr, op.size))
        case "relax_perms":
            return int(kvm_pgtable_stage2_relax_perms(pgt, op.addr, model_prot(op.prot), fault))
        case "mkyoung":
            kvm_pgtable_stage2_mkyoung(pgt, op.addr, fault)
            return None
        case "test_clear_young":
            return int(kvm_pgtable_stage2_test_clear_young(pgt, op.addr, op.size, op.mkold))
        case "split":
            return int(kvm_pgtable_stage2_split(pgt, op.addr, op.size, s.split_mc))
        case "create_unlinked":
            return int(kvm_pgtable_stage2_create_unlinked(pgt, op.phys, op.level,
                                                          model_prot(op.prot), s.map_mc,
                                                          op.force_pte))
        case "walk":
            return model_walk(s, op)
        case "get_leaf":
            leaf = kvm_pgtable_get_leaf(pgt, op.addr)
            return LeafOutcome(leaf.ret, leaf.pte, leaf.level)
        case _:
            return int(kvm_pgtable_stage2_flush(pgt, op.addr, op.size))


def run_kernel(k: KernelPgtable, op: Op) -> Result:
    """Run op on the kernel's code; return its result (None for mkyoung)."""
    match op.name:
        case "map":
            old = k.series <= SERIES_6_1
            flags = K_WALK_HANDLE_FAULT | K_WALK_SHARED if op.fault and not old else 0
            return k.map(op.addr, op.size, op.phys, op.prot, flags)
        case "set_owner":
            return k.set_owner(op.addr, op.size, op.owner)
        case "unmap":
            return k.unmap(op.addr, op.size)
        case "wrprotect":
            return k.wrprotect(op.addr, op.size)
        case "relax_perms":
            return k.relax_perms(op.addr, op.prot)
        case "mkyoung":
            k.mkyoung(op.addr)
            return None
        case "test_clear_young":
            return int(k.test_clear_young(op.addr, op.size, op.mkold))
        case "split":
            return k.split(op.addr, op.size)
        case "create_unlinked":
            return k.create_unlinked(op.phys, op.level, op.prot, op.force_pte)
        case "walk":
            return WalkOutcome(*k.walk(op.addr, op.size, op.walk_flags, op.fail_at,
                                       op.fail_ret, op.zap_at))
        case "get_leaf":
            return LeafOutcome(*k.get_leaf(op.addr))
        case _:
            return k.flush(op.addr, op.size)


@dataclass(frozen=True)
class Difference:
    """What the two sides disagreed on after an operation."""

    what: str
    kernel: str
    model: str


def _normalise(events: Sequence[KernelEvent], op: Op, ret: Result,
               series: int = 612) -> list[KernelEvent]:
    """Drop what is not compared: WARN conditions, relax_perms's level on failure.

    Before LPA2 made level -1 a valid hint (6.1), "no level hint" was level 0
    (__tlbi_level skips the TTL for 0, stage2_put_pte passes 0 for a table entry); from
    then on it is TLBI_TTL_UNKNOWN. Against 6.1 a level 0 on either side (the model's v6.1
    profile passes 0 where 6.1 does) is read as that.
    """
    out: list[KernelEvent] = []
    for e in events:
        if isinstance(e, Warn):
            e = Warn(e.function, "")
        if isinstance(e, TlbiVmidIpa) and series <= SERIES_6_1 and e.level == 0:
            e = e._replace(level=TLBI_TTL_UNKNOWN)
        if isinstance(e, TlbiVmidIpa) and op.name == "relax_perms" and ret != 0:
            e = e._replace(level=-1)
        out.append(e)
    return out


def _compare_results(k_ret: Result, m_ret: Result) -> Difference | None:
    """Return how two outcomes differ: the return value, then (walks) the first visitor
    call that differs, or (get_leaf) the entry or level."""
    if isinstance(k_ret, WalkOutcome) and isinstance(m_ret, WalkOutcome):
        if k_ret.ret != m_ret.ret:
            return Difference("return value", str(k_ret.ret), str(m_ret.ret))
        kv, mv = k_ret.visits, m_ret.visits
        if kv != mv:
            i = next((i for i, (a, b) in enumerate(zip(kv, mv, strict=False)) if a != b),
                     min(len(kv), len(mv)))
            return Difference(f"visitor call {i + 1}", str(kv[i]) if i < len(kv) else "(none)",
                              str(mv[i]) if i < len(mv) else "(none)")
        return None
    if isinstance(k_ret, LeafOutcome) and k_ret != m_ret:
        return Difference("get_leaf (ret, entry, level)", str(k_ret), str(m_ret))
    if k_ret != m_ret:
        return Difference("return value", str(k_ret), str(m_ret))
    return None


def compare(s: Sides, op: Op, k_ret: Result, m_ret: Result) -> Difference | None:
    """Return the first difference between the sides after op, or None."""
    diff = _compare_results(k_ret, m_ret)
    if diff is not None:
        return diff
    k_events = _normalise(s.kernel.take_events(), op, k_ret, s.kernel.series)
    m_events = _normalise(list(s.env.events.since(s.events_seen)), op, m_ret,
                          s.kernel.series)
    k_order = [e for e in k_events if not isinstance(e, PageFree)]
    m_order = [e for e in m_events if not isinstance(e, PageFree)]
    if k_order != m_order:
        i = next((i for i, (a, b) in enumerate(zip(k_order, m_order, strict=False)) if a != b),
                 min(len(k_order), len(m_order)))
        return Difference(f"event {i}", _events_text(k_order[i:i + 3]),
                          _events_text(m_order[i:i + 3]))
    k_free = sorted(e.pa for e in k_events if isinstance(e, PageFree))
    m_free = sorted(e.pa for e in m_events if isinstance(e, PageFree))
    if k_free != m_free:
        return Difference("pages freed", _pas(k_free), _pas(m_free))
    for which, mc in ((0, s.map_mc), (1, s.split_mc)):
        if s.kernel.memcache(which) != mc.objects:
            return Difference(f"memcache {which} contents", _pas(s.kernel.memcache(which)),
                              _pas(mc.objects))
    return _compare_pages(s)


def _compare_pages(s: Sides) -> Difference | None:
    k_pages = s.kernel.live_pages()
    m_counts = s.env.pool.refcount
    if set(k_pages) != set(m_counts):
        return Difference("live pages", _pas(sorted(k_pages)), _pas(sorted(m_counts)))
    mem = s.env.mem
    for pa, (count, data) in sorted(k_pages.items()):
        if count != m_counts[pa]:
            return Difference(f"refcount of page {pa:#x}", str(count), str(m_counts[pa]))
        model = mem.read_bytes(pa, len(data))
        if model != data:
            off = next(i for i in range(0, len(data), 8) if data[i:i + 8] != model[i:i + 8])
            kw = int.from_bytes(data[off:off + 8], "little")
            mw = int.from_bytes(model[off:off + 8], "little")
            return Difference(f"descriptor at {pa + off:#x}", f"{kw:#x}", f"{mw:#x}")
    return None


def _pas(pas: list[int]) -> str:
    return "[" + ", ".join(f"{p:#x}" for p in pas) + "]"


def _events_text(events: Sequence[KernelEvent]) -> str:
    return "; ".join(repr(e) for e in events) or "(none)"


# ---------------------------------------------------------------------------------------
# Runs.


@dataclass(frozen=True)
class SequenceResult:
    """One sequence: how many operations agreed, and the difference that ended it."""

    ops: tuple[Op, ...]
    agreed: int
    difference: Difference | None
    at: int | None


def step(s: Sides, op: Op) -> tuple[Result, Result, Difference | None]:
    """Run op on both sides (memcaches prepared alike): the kernel's outcome, the
    model's, and the first difference after it."""
    _prepare(s, op)
    k_ret = run_kernel(s.kernel, op)
    m_ret = run_model(s, op)
    return k_ret, m_ret, compare(s, op, k_ret, m_ret)


def run_sequence(kernel: KernelPgtable, profile: BehaviourProfile, caps: KvmCaps,
                 ops: list[Op], ipa_bits: int = IPA_BITS) -> SequenceResult:
    """Run ops on fresh sides, comparing after init and each operation; stop at a difference."""
    s = new_sides(kernel, profile, caps, ipa_bits)
    diff = compare(s, Op("init", 0), None, None)
    if diff is not None:
        return SequenceResult(tuple(ops), 0, diff, None)
    for i, op in enumerate(ops):
        _, _, diff = step(s, op)
        if diff is not None:
            return SequenceResult(tuple(ops), i, diff, i)
    return SequenceResult(tuple(ops), len(ops), None, None)


def shrink(kernel: KernelPgtable, profile: BehaviourProfile, caps: KvmCaps,
           ops: list[Op], ipa_bits: int = IPA_BITS) -> list[Op]:
    """Return a shortest-found prefix-and-subset of ops that still ends in a difference."""

    def fails(candidate: list[Op]) -> bool:
        r = run_sequence(kernel, profile, caps, candidate, ipa_bits)
        return r.difference is not None

    current = list(ops)
    i = 0
    while i < len(current) - 1:
        trial = current[:i] + current[i + 1:]
        if fails(trial):
            r = run_sequence(kernel, profile, caps, trial, ipa_bits)
            current = trial[: (r.at if r.at is not None else len(trial) - 1) + 1]
        else:
            i += 1
    return current


@dataclass(frozen=True)
class DiffReport:
    """A whole run: operations compared, operations agreed, the differences found."""

    seed: int
    profile: str
    compared: int
    agreed: int
    differences: tuple[tuple[SequenceResult, tuple[Op, ...]], ...]
    by_op: dict[str, int] = field(default_factory=dict)

    @property
    def agreement(self) -> float:
        """Return the agreement in percent."""
        return 100.0 * self.agreed / self.compared if self.compared else 100.0


def sequences(seed: int, total: int, length: int, series: int = 612,
              geo: Geometry = GEO_4K) -> Iterator[list[Op]]:
    """Yield random sequences whose lengths add up to total (operations series has)."""
    rng = random.Random(seed)
    left = total
    while left > 0:
        n = min(length, left)
        yield [random_op(rng, series, geo) for _ in range(n)]
        left -= n


def run_diff(kernel: KernelPgtable, profile: BehaviourProfile, *, ops: int, seed: int,
             length: int = 40, caps: KvmCaps | None = None,
             replay: list[Op] | None = None,
             advance: Callable[[int], None] | None = None,
             ipa_bits: int = IPA_BITS) -> DiffReport:
    """Compare about ops operations in random sequences (or one replayed sequence)."""
    lo, hi = IPA_BITS_RANGE
    if not lo <= ipa_bits <= hi:
        raise InputError(f"kernel diff: IPA size {ipa_bits} bits is outside {lo}..{hi}")
    caps = caps or KvmCaps()
    compared = agreed = 0
    found: list[tuple[SequenceResult, tuple[Op, ...]]] = []
    by_op: dict[str, int] = {}
    geo = Geometry(kernel.page_shift)
    seqs = [replay] if replay is not None else sequences(seed, ops, length, kernel.series, geo)
    for seq in seqs:
        r = run_sequence(kernel, profile, caps, seq, ipa_bits)
        ran = r.agreed + (1 if r.difference is not None and r.at is not None else 0)
        compared += ran
        agreed += r.agreed
        for op in seq[: r.agreed]:
            by_op[op.name] = by_op.get(op.name, 0) + 1
        if r.difference is not None:
            upto = list(seq[: (r.at if r.at is not None else 0) + 1])
            found.append((r, tuple(shrink(kernel, profile, caps, upto, ipa_bits))))
        if advance is not None:
            advance(ran)
    return DiffReport(seed, profile.name, compared, agreed, tuple(found), by_op)

