"""Translation table walks: the level-by-level descent, shared by both stages.

One loop serves stage 1 and stage 2 (ASL AArch64.S1Walk and AArch64.S2Walk share
their shape); what differs is an input: the start level and base, and how a
descriptor address becomes a physical read (stage 1 under stage 2 translates it).

ASL: AArch64.S1Walk, AArch64.S2Walk, AArch64.S1StartLevel, AArch64.S2StartLevel,
AArch64.OAOutOfRange, AArch64.TTBaseAddress.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from s2mmu.arch.access import AccessDescriptor
from s2mmu.arch.bits import bit, bits
from s2mmu.arch.descriptors import (
    Block,
    DescContext,
    Descriptor,
    Invalid,
    Page,
    Table,
    decode_descriptor,
    tt_base_address,
)
from s2mmu.arch.faults import Fault, FaultRecord
from s2mmu.arch.params import FINAL_LEVEL, Granule
from s2mmu.arch.reprs import hex_repr


@hex_repr(decimal=("stage", "level", "index"))
@dataclass(frozen=True)
class WalkStep:
    """One descriptor read: where it came from and what it says (for --explain)."""

    stage: int
    level: int
    table_base: int       # address of the table (IPA for stage 1 under stage 2)
    index: int
    descaddress: int      # table_base + 8*index, in the walk's input space
    paddress: int         # physical address actually read
    raw: int
    decoded: Descriptor


# One descriptor read of a walk as the walk keeps it: (table base, index, PA read, the
# descriptor as read). A plain tuple: a walk records one per level, and the WalkStep
# records the explain trace shows are built from it only when asked (TTWState.steps).
Read = tuple[int, int, int, Descriptor]


@hex_repr(decimal=("stage",))
@dataclass(frozen=True)
class TTWState:
    """The result of a successful walk (ASL TTWState, reduced to what is used).

    reads: every descriptor read from the start level to the leaf, as read (the leaf's
    raw value before any hardware update); steps gives them as WalkSteps.
    """

    stage: int
    leaf: Block | Page
    tables: tuple[Table, ...]
    leaf_paddress: int    # physical address of the leaf descriptor
    reads: tuple[Read, ...]

    @property
    def level(self) -> int:
        """Return the level of the leaf."""
        return self.leaf.level

    @property
    def steps(self) -> tuple[WalkStep, ...]:
        """Return the walk's descriptor reads as the explain trace records them."""
        return tuple(WalkStep(self.stage, desc.level, base, index, base + 8 * index, pa,
                              desc.raw, desc) for base, index, pa, desc in self.reads)

    def leaf_descaddress(self) -> int:
        """Return the leaf descriptor's address in the walk's input space (an IPA under
        stage 2, where leaf_paddress is the PA it was read from)."""
        base, index, _, _ = self.reads[-1]
        return base + 8 * index


# A descriptor fetch: (input-space descriptor address, level) -> (PA read, value) or a fault.
Fetch = Callable[[int, int], "tuple[int, int] | FaultRecord"]

# A table-descriptor access-flag update (FEAT_HAFT): (input-space descriptor address, PA
# read, descriptor as read, level) -> True when written, False when the compare-and-swap
# found the descriptor changed, or the fault the write took.
TableUpdate = Callable[[int, int, int, int], "bool | FaultRecord"]

TABLE_UPDATE_RETRIES = 64
"""How many lost compare-and-swaps one table descriptor may see before the model gives up
(a port whose cas64 always fails is a harness bug, not an architectural outcome)."""


@dataclass(frozen=True)
class WalkSetup:
    """The inputs one walk needs, independent of stage."""

    stage: int
    granule: Granule
    iasize: int
    startlevel: int
    ttb: int
    ps: int               # output size in bits for address size checks
    ps_raw: int           # the IPS/PS field as programmed
    ds: bool
    lpa: bool
    pamax52: bool
    contiguous_faults: bool = False   # ImplChoices.contiguous_bit_faults
    nt_faults: bool = False           # FEAT_BBM and ImplChoices.block_nt_faults
    contiguous_oa_from_ia: bool = False   # ImplChoices.contiguous_oa_from_ia

    def context(self) -> DescContext:
        """Return the descriptor decoding context."""
        return _context(self)

    def base_address(self) -> int:
        """Return the initial table's physical base (ASL AArch64.TTBaseAddress)."""
        return _base_address(self)


@lru_cache(maxsize=1024)
def _base_address(setup: WalkSetup) -> int:
    return tt_base_address(setup.ttb, 64 - setup.iasize, setup.ps_raw == 0b110, setup.ds,
                           setup.granule, setup.startlevel, setup.lpa)


@lru_cache(maxsize=1024)
def _context(setup: WalkSetup) -> DescContext:
    return DescContext(setup.granule, setup.ds, setup.lpa, setup.stage, setup.pamax52)


DECODED_MAX = 1 << 16
"""How many decoded descriptors a context keeps before it starts again (bounded memory)."""


@lru_cache(maxsize=256)
def _decoded(ctx: DescContext) -> dict[tuple[int, int], Descriptor]:
    """Return the descriptors decoded so far in ctx, by (raw, level): a decode is a pure
    function of the three, and walks meet the same table descriptors again and again."""
    return {}


@lru_cache(maxsize=1024)
def _level_slices(setup: WalkSetup) -> tuple[tuple[int, int], ...]:
    """Return, from the start level down, each level's (lsb, mask) of level_index."""
    g = setup.granule
    out = []
    for level in range(setup.startlevel, FINAL_LEVEL + 1):
        lsb = (FINAL_LEVEL - level) * g.stride + g.bits
        msb = setup.iasize - 1 if level == setup.startlevel else lsb + g.stride - 1
        out.append((lsb, (1 << (msb - lsb + 1)) - 1))
    return tuple(out)


def level_index(setup: WalkSetup, level: int, ia: int) -> int:
    """Return the index into the level's table for input address ia.

    The start level takes every remaining input bit (concatenated stage-2 tables
    make that more than one stride).
    """
    g = setup.granule
    lsb = (FINAL_LEVEL - level) * g.stride + g.bits
    msb = setup.iasize - 1 if level == setup.startlevel else lsb + g.stride - 1
    return bits(ia, msb, lsb)


def oa_out_of_range(addr: int, ps: int) -> bool:
    """Return whether addr needs more than ps bits (ASL AArch64.OAOutOfRange)."""
    return addr >> ps != 0


@dataclass(frozen=True, eq=False)
class WalkPlan:
    """What every walk of one setup starts from, worked out once (mechanics of walk).

    base: the initial table's address (ASL AArch64.TTBaseAddress); ctx: the descriptor
    decoding context; slices: each level's (lsb, mask) of level_index, from the start
    level; decoded: the descriptors decoded so far in ctx, by (raw, level).
    """

    setup: WalkSetup
    base: int
    ctx: DescContext
    slices: tuple[tuple[int, int], ...]
    decoded: dict[tuple[int, int], Descriptor]


@lru_cache(maxsize=1024)
def walk_plan(setup: WalkSetup) -> WalkPlan:
    """Return the plan of walks with setup (a pure function of it, memoised)."""
    ctx = setup.context()
    return WalkPlan(setup, setup.base_address(), ctx, _level_slices(setup), _decoded(ctx))


def walk(setup: WalkSetup, ia: int, access: AccessDescriptor, fetch: Fetch,
         trace: list[WalkStep] | None = None,
         update: TableUpdate | None = None) -> TTWState | FaultRecord:
    """Walk the tables for input address ia, returning the leaf or the fault.

    The caller has already checked that ia is within the input size and that the
    start level is legal. Faults returned here are stage-relative (the caller marks
    stage 2 and fills in addresses).

    update (FEAT_HAFT, walkparams.haft): a table descriptor with AF (bit[10]) 0 is
    written with AF 1 on the way down, before the next level is read; a lost
    compare-and-swap reads the same descriptor again and decides again (ASL
    AArch64.S1Walk / AArch64.S2Walk: the repeat ... until new_descriptor == descriptor
    loop around AArch64.MemSwapTableDesc). None: no table update (haft 0).
    """
    return walk_planned(walk_plan(setup), ia, access, fetch, trace, update)


def walk_planned(plan: WalkPlan, ia: int, access: AccessDescriptor, fetch: Fetch,
                 trace: list[WalkStep] | None = None,
                 update: TableUpdate | None = None) -> TTWState | FaultRecord:
    """Walk as walk does, from the setup's plan (walk_plan)."""
    setup, base, ctx, decoded, slices = plan.setup, plan.base, plan.ctx, plan.decoded, plan.slices
    if oa_out_of_range(base, setup.ps):
        return FaultRecord(Fault.ADDRESS_SIZE, 0, access,
                           reason=f"table base {base:#x} exceeds the {setup.ps}-bit output size")
    tables: list[Table] = []
    reads: list[Read] = []
    level = setup.startlevel
    lost = 0
    while True:
        lsb, width_mask = slices[level - setup.startlevel]
        index = (ia >> lsb) & width_mask       # level_index(setup, level, ia)
        descaddress = base + 8 * index
        got = fetch(descaddress, level)
        if isinstance(got, FaultRecord):
            return got
        pa, raw = got
        desc = decoded.get((raw, level))
        if desc is None:
            if len(decoded) >= DECODED_MAX:
                decoded.clear()
            desc = decoded[raw, level] = decode_descriptor(raw, level, ctx)
        reads.append((base, index, pa, desc))
        if trace is not None:
            trace.append(WalkStep(setup.stage, level, base, index, descaddress, pa, raw, desc))
        match desc:
            case Invalid(why=why):
                return FaultRecord(Fault.TRANSLATION, level, access,
                                   reason=f"level {level} descriptor {raw:#018x} is invalid: {why}")
            case Table(next_base=next_base):
                if oa_out_of_range(next_base, setup.ps):
                    return FaultRecord(Fault.ADDRESS_SIZE, level, access, reason=(
                        f"next-level table address {next_base:#x} exceeds the "
                        f"{setup.ps}-bit output size"))
                if update is not None and not raw >> 10 & 1:
                    done = update(descaddress, pa, raw, level)
                    if isinstance(done, FaultRecord):
                        return done
                    if not done:
                        lost += 1
                        if lost >= TABLE_UPDATE_RETRIES:
                            raise RuntimeError(
                                f"table descriptor at {pa:#x} changed under "
                                f"{TABLE_UPDATE_RETRIES} access-flag updates: the table "
                                "port's cas64 never succeeds")
                        reads.pop()
                        if trace is not None:
                            trace.pop()
                        continue   # read the descriptor again at this level
                tables.append(desc)
                base, level = next_base, level + 1
            case Block(oa=oa) | Page(oa=oa):
                why = leaf_translation_fault(setup, desc)
                if why:
                    return FaultRecord(Fault.TRANSLATION, level, access, reason=why)
                if oa_out_of_range(oa, setup.ps):
                    return FaultRecord(Fault.ADDRESS_SIZE, level, access, reason=(
                        f"output address {oa:#x} exceeds the {setup.ps}-bit output size"))
                assert isinstance(desc, Block | Page)
                return TTWState(setup.stage, desc, tuple(tables), pa, tuple(reads))


def contiguous_bit(raw: int, granule: Granule, level: int) -> bool:
    """Return the Contiguous bit of a leaf (ASL AArch64.ContiguousBit).

    Bit[52], but it is RES0 where no contiguous range is defined: a 4KB level-0 block,
    a 16KB or 64KB level-1 block.
    """
    if (granule, level) in ((Granule.G4K, 0), (Granule.G16K, 1), (Granule.G64K, 1)):
        return False
    return bool(bit(raw, 52))


def contiguous_size(granule: Granule, level: int) -> int:
    """Return log2 of the number of entries in a contiguous range (ASL ContiguousSize).

    4KB: 16 entries; 16KB: 32 at level 2, 128 at level 3; 64KB: 32.
    """
    if granule is Granule.G4K:
        return 4
    if granule is Granule.G16K:
        return 7 if level == FINAL_LEVEL else 5
    return 5


def leaf_translation_fault(setup: WalkSetup, leaf: Block | Page) -> str:
    """Return why a leaf gives a Translation fault before its OA is checked, or "".

    ASL: AArch64.ContiguousBitFaults (a contiguous range larger than the input address
    space) and AArch64.BlocknTFaults (FEAT_BBM nT, bit[16], on a block); both faults
    are IMPLEMENTATION DEFINED, enabled by the WalkSetup.
    """
    g, level = setup.granule, leaf.level
    tsize = g.bits + (FINAL_LEVEL - level) * g.stride + contiguous_size(g, level)
    if setup.contiguous_faults and contiguous_bit(leaf.raw, g, level) and tsize > setup.iasize:
        return f"contiguous range of 2^{tsize} bytes exceeds the {setup.iasize}-bit input size"
    if setup.nt_faults and isinstance(leaf, Block) and bit(leaf.raw, 16):
        return "block descriptor has nT (bit[16]) set"
    return ""


def leaf_output(state: TTWState, setup: WalkSetup, ia: int) -> int:
    """Return the output address for ia: the leaf's base plus the offset within it.

    ASL: StageOA. With setup.contiguous_oa_from_ia the offset covers the whole
    contiguous run of a leaf with the Contiguous bit (the ASL's reading).
    """
    g, level = setup.granule, state.level
    size = g.block_size(level)
    if setup.contiguous_oa_from_ia and contiguous_bit(state.leaf.raw, g, level):
        size <<= contiguous_size(g, level)
    return (state.leaf.oa & ~(size - 1)) | (ia & (size - 1))
