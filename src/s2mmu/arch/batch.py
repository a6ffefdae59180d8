"""Batch translation: many addresses through one regime and one memory, as arrays.

The answer is the scalar path's, bit for bit, by construction:

1. The descent is vectorised (numpy): for every lane, level by level, the descriptor
   address, the stage-2 walk of that address when stage 1 runs under stage 2, the read,
   the descriptor's type and its output address; then the stage-2 walk of the output IPA.
2. Each lane gets a key: every descriptor it read with its output-address bits masked
   out, whether each output address was out of range, the address bits above the input
   size, and the stage-2 keys of its table reads. Two lanes with equal keys read
   descriptors that differ only in their output addresses, so the scalar translation
   decides the same faults, permissions and attributes for both: it differs only in the
   output address, which step 1 computed for every lane.
3. The scalar path (full_translate) runs once per distinct key, on one lane of it; every
   lane takes that lane's answer with its own output address.

Descriptor updates (hardware AF and dirty state) change memory under later lanes, so a
lane that might update (TCR.HA or VTCR_EL2.HA with AF=0 on a descriptor it reads, or HD
with DBM on a write) is answered by the scalar path in program order: lanes before it
come from the batch, the rest is batched again. A custom table port (Env.tables, which
may abort or record) makes the whole batch scalar.

ASL: AArch64.FullTranslate (the scalar path this reproduces), AArch64.S1Walk,
AArch64.S2Walk, StageOA, AArch64.EncodePAR.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from s2mmu.arch.access import AccessDescriptor, acc_at
from s2mmu.arch.at import (
    AtException,
    AtOp,
    AtResult,
    at_undefined_reason,
    encode_par,
    stage2_exception,
)
from s2mmu.arch.attrs import MemoryAttributes
from s2mmu.arch.errors import InputError
from s2mmu.arch.faults import Fault, FaultRecord, esr_undefined
from s2mmu.arch.memory import PhysMem
from s2mmu.arch.params import FINAL_LEVEL, Granule, S1TTWParams, S2TTWParams, get_s1_ttw_params
from s2mmu.arch.perms import s1_permissions, s2_permissions
from s2mmu.arch.state import Regime, SysRegs
from s2mmu.arch.translate import (
    REGIME_ELS,
    AddressDescriptor,
    Env,
    S2Prep,
    _s1_setup,
    _s1_txsz,
    _s2_prepare,
    _stage2_of,
    full_translate,
)
from s2mmu.arch.walk import WalkSetup, contiguous_size

U64 = npt.NDArray[np.uint64]
Mask = npt.NDArray[np.bool_]

FAULTS: tuple[Fault, ...] = tuple(Fault)
"""The fault kinds, in the order BatchResult.fault indexes them (-1: no fault)."""

PAR_PA_MASK = ((1 << 52) - 1) & ~0xFFF
"""PAR_EL1.PA, bits [51:12]: the only part of a successful PAR that depends on the address."""

MAX_REBATCH = 8
"""How many times a batch is re-run after a lane that updates descriptors; then scalar."""


def _u(v: int) -> np.uint64:
    return np.uint64(v)


DENSE_SPAN = 4
"""_unique_inverse counts instead of sorting when the values span at most this many
integers per value (plus 2^16)."""

Ints = TypeVar("Ints", npt.NDArray[np.uint64], npt.NDArray[np.intp])
_T = TypeVar("_T", bound=np.generic)


def _unique_inverse(x: Ints) -> tuple[Ints, npt.NDArray[np.intp]]:
    """Return np.unique(x, return_inverse=True) for a 1-D integer array.

    Lanes' pages are mostly close together: then the answer is counted in a table over
    their span (linear, no sort); otherwise np.unique sorts.
    """
    n = len(x)
    if n:
        lo = x.min()
        span = int(x.max() - lo) + 1
        if span <= DENSE_SPAN * n + (1 << 16):
            d = np.subtract(x, lo, out=np.empty(n, np.intp), casting="unsafe")
            present = np.zeros(span, np.bool_)
            present[d] = True
            values = np.flatnonzero(present)
            inverse = (np.cumsum(present, dtype=np.intp) - 1)[d]
            return values.astype(x.dtype) + lo, inverse
    uniq, inverse = np.unique(x, return_inverse=True)
    return uniq, inverse.reshape(-1)


@dataclass(frozen=True)
class BatchResult:
    """The translations of a batch of addresses, one array entry per lane.

    pa: the output address (the IPA with stage1_only), 0 where the lane faulted.
    fault: index into FAULTS of the fault's kind, -1 where the translation succeeded;
    level, secondstage, s2fs1walk: the FaultRecord's fields (0/False on success).
    ipa: the IPA stage 2 faulted on (FaultRecord.ipaddress), 0 otherwise.
    attrs: index into attr_table of the result's memory attributes, -1 on a fault.
    s1_perms, s2_perms: the leaves' permissions where the lane translated (ASL
    S1DirectBasePermissions / S2DirectBasePermissions, with the hierarchical controls):
    stage 1 as PR|PW<<1|PX<<2|UR<<3|UW<<4|UX<<5, stage 2 as R|W<<1|PX<<2|UX<<3; 0 where
    the stage was off or the lane faulted.
    par: PAR_EL1 as an AT of this translation reports it (AArch64.EncodePAR).
    scalar_lanes: how many lanes the scalar path answered directly (updates, fallback).
    write_lanes: for each descriptor update made in memory (PhysMem.hw_writes order), the
    lane that made it (only scalar-answered lanes update).
    """

    pa: U64
    fault: npt.NDArray[np.int8]
    level: npt.NDArray[np.int8]
    secondstage: Mask
    s2fs1walk: Mask
    ipa: U64
    attrs: npt.NDArray[np.int32]
    attr_table: tuple[MemoryAttributes, ...]
    s1_perms: npt.NDArray[np.uint8]
    s2_perms: npt.NDArray[np.uint8]
    par: U64
    scalar_lanes: int
    write_lanes: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.pa)

    def fault_kind(self, i: int) -> Fault | None:
        """Return lane i's fault kind, or None when it translated."""
        f = int(self.fault[i])
        return None if f < 0 else FAULTS[f]


class _Out:
    """The result arrays being filled (local mechanics of translate_batch)."""

    def __init__(self, n: int) -> None:
        self.pa = np.zeros(n, np.uint64)
        self.fault = np.full(n, -1, np.int8)
        self.level = np.zeros(n, np.int8)
        self.secondstage = np.zeros(n, np.bool_)
        self.s2fs1walk = np.zeros(n, np.bool_)
        self.ipa = np.zeros(n, np.uint64)
        self.attrs = np.full(n, -1, np.int32)
        self.s1_perms = np.zeros(n, np.uint8)
        self.s2_perms = np.zeros(n, np.uint8)
        self.par = np.zeros(n, np.uint64)
        self.table: dict[MemoryAttributes, int] = {}
        self.scalar = 0
        self.write_lanes: list[int] = []

    def attr_index(self, m: MemoryAttributes) -> int:
        return self.table.setdefault(m, len(self.table))

    def store(self, i: int, got: AddressDescriptor | FaultRecord, env: Env,
              params: tuple[S1TTWParams, S2TTWParams | None]) -> None:
        """Store one scalar answer in lane i."""
        self.par[i] = encode_par(got, env)
        if isinstance(got, FaultRecord):
            self.fault[i] = FAULTS.index(got.statuscode)
            self.level[i] = got.level
            self.secondstage[i] = got.secondstage
            self.s2fs1walk[i] = got.s2fs1walk
            self.ipa[i] = got.ipaddress or 0
        else:
            self.pa[i] = got.paddress
            self.attrs[i] = self.attr_index(got.memattrs)
            self.s1_perms[i], self.s2_perms[i] = perm_masks(got, *params, env)

    def result(self) -> BatchResult:
        return BatchResult(self.pa, self.fault, self.level, self.secondstage, self.s2fs1walk,
                           self.ipa, self.attrs, tuple(self.table), self.s1_perms,
                           self.s2_perms, self.par, self.scalar, tuple(self.write_lanes))


def perm_masks(got: AddressDescriptor, s1p: S1TTWParams, s2p: S2TTWParams | None, env: Env
               ) -> tuple[int, int]:
    """Return the stage-1 and stage-2 permission masks of a translation (BatchResult)."""
    m1 = m2 = 0
    if got.s1 is not None:
        pr, pw, px, ur, uw, ux = s1_permissions(got.s1, s1p).effective()
        m1 = (pr | pw << 1 | px << 2 | ur << 3 | uw << 4 | ux << 5)
    if got.s2 is not None and s2p is not None:
        r, w, px, ux = s2_permissions(got.s2, s2p, env.fs.has("FEAT_XNX")).effective()
        m2 = r | w << 1 | px << 2 | ux << 3
    return m1, m2


# ------------------------------------------------------------------ vectorised reads

def read64_batch(mem: PhysMem, pa: U64, big_endian: bool) -> U64:
    """Return the 64-bit words at the (8-byte aligned) physical addresses pa.

    Untouched memory reads as zero, as PhysMem.read64 does.
    """
    if len(pa) == 0:
        return np.zeros(0, np.uint64)
    pages, inv = _unique_inverse(pa >> _u(12))
    rows = np.zeros((len(pages), 512), np.dtype("<u8"))
    for j, page in enumerate(pages.tolist()):
        backing = mem.page_bytes(int(page))
        if backing is not None:
            rows[j] = np.frombuffer(backing, np.dtype("<u8"))
    raw = rows[inv.reshape(-1), ((pa >> _u(3)) & _u(511)).astype(np.intp)]
    out: U64 = (raw.byteswap() if big_endian else raw).astype(np.uint64)
    return out


# ------------------------------------------------------------------ the vectorised walk

@dataclass
class _Walk:
    """What a vectorised walk found for each lane (mechanics, not a result type)."""

    cols: list[U64]          # key columns
    ok: Mask                 # reached a leaf (block or page) with its OA in range
    out: U64                 # output address where ok
    may_update: Mask         # a leaf this walk read might be updated by hardware
    fetch_ipa: list[U64]     # per level: the descriptor's input-space address (stage 1)


def _oa_field_mask(g: Granule, lsb: int, ds: bool, lpa: bool) -> int:
    """Return the descriptor bits that hold the output address (descriptors.output_address)."""
    m = ((1 << 48) - 1) & ~((1 << lsb) - 1)
    if ds and g is not Granule.G64K:
        m |= 0b11 << 48 | 0b11 << 8
    elif g is Granule.G64K and lpa:
        m |= 0xF << 12
    return m


def _oa(raw: U64, lsb: int, setup: WalkSetup) -> U64:
    """Vectorised descriptors.output_address."""
    oa = raw & _u(((1 << 48) - 1) & ~((1 << lsb) - 1))
    if setup.ds and setup.granule is not Granule.G64K:
        oa |= ((raw >> _u(48)) & _u(3)) << _u(48) | ((raw >> _u(8)) & _u(3)) << _u(50)
    elif setup.granule is Granule.G64K and setup.lpa:
        oa |= ((raw >> _u(12)) & _u(0xF)) << _u(48)
    return oa


def _block_ok(setup: WalkSetup, level: int) -> bool:
    from s2mmu.arch.descriptors import block_desc_supported
    return block_desc_supported(setup.granule, level, setup.ds, setup.pamax52)


Fetch = Callable[[U64, Mask, int], "tuple[U64, Mask, list[U64], Mask]"]


def _walk(setup: WalkSetup, ia: U64, active: Mask, fetch: Fetch, read: Callable[[U64], U64],
          ha: bool, hd_write: bool, dirty_any: bool = False) -> _Walk:
    """Walk the tables for every active lane (the vectorised walk.walk).

    dirty_any: a write may update the dirty state whatever DBM holds (FEAT_S1PIE and
    FEAT_S2PIE, where bit[51] is PIIndex[1]): every leaf a write reads with HD may update.

    fetch(addresses, lanes, level) returns the PA to read, which lanes could read, the
    key columns of the read's own translation, and which lanes' translation might update.
    """
    n = len(ia)
    g = setup.granule
    cols: list[U64] = []
    fetch_ipa: list[U64] = []
    base = np.full(n, setup.base_address(), np.uint64)
    live = active.copy()
    ok = np.zeros(n, np.bool_)
    out = np.zeros(n, np.uint64)
    upd = np.zeros(n, np.bool_)
    for level in range(setup.startlevel, FINAL_LEVEL + 1):
        lsb = (FINAL_LEVEL - level) * g.stride + g.bits
        msb = setup.iasize - 1 if level == setup.startlevel else lsb + g.stride - 1
        index = (ia >> _u(lsb)) & _u((1 << (msb - lsb + 1)) - 1)
        desc = base + _u(8) * index
        fetch_ipa.append(np.where(live, desc, _u(0)))
        pa, readable, sub, sub_upd = fetch(desc, live, level)
        cols.extend(sub)
        upd |= sub_upd & live
        live &= readable
        raw = np.zeros(n, np.uint64)
        if live.any():
            raw[live] = read(pa[live])
        valid = (raw & _u(1)).astype(np.bool_)
        bit1 = ((raw >> _u(1)) & _u(1)).astype(np.bool_)
        if level == FINAL_LEVEL:
            leaf_lsb = g.bits
            table = np.zeros(n, np.bool_)
            leaf = live & valid & bit1
        else:
            leaf_lsb = lsb
            table = live & valid & bit1
            leaf = live & valid & ~bit1 & _block_ok(setup, level)
        oa_bits = np.where(table, _u(_oa_field_mask(g, g.bits, setup.ds, setup.lpa)),
                           _u(_oa_field_mask(g, leaf_lsb, setup.ds, setup.lpa)))
        next_base = _oa(raw, g.bits, setup)
        leaf_oa = _oa(raw, leaf_lsb, setup)
        oa = np.where(table, next_base, leaf_oa)
        oor = (oa >> _u(setup.ps)) != _u(0)
        cols.append(np.where(live, (raw & ~oa_bits), _u(0)))
        cols.append(np.where(live, oor.astype(np.uint64) | _u(2), _u(0)))
        done = leaf & ~oor
        if done.any():
            size = np.full(n, 1 << lsb if level != FINAL_LEVEL else 1 << g.bits, np.uint64)
            if setup.contiguous_oa_from_ia and (g, level) not in (
                    (Granule.G4K, 0), (Granule.G16K, 1), (Granule.G64K, 1)):
                cont = ((raw >> _u(52)) & _u(1)).astype(np.bool_)
                size = np.where(cont, size << _u(contiguous_size(g, level)), size)
            off = size - _u(1)
            out = np.where(done, (leaf_oa & ~off) | (ia & off), out)
            ok |= done
            af0 = ((raw >> _u(10)) & _u(1)) == _u(0)
            dbm = (((raw >> _u(51)) & _u(1)) == _u(1)) | dirty_any
            upd |= done & ((af0 & ha) | (dbm & hd_write))
        live &= table & ~oor
        base = np.where(live, next_base, base)
        if not live.any():
            break
    return _Walk(cols, ok, out, upd, fetch_ipa)


def _s2_walk_lanes(mem: PhysMem, p: S2TTWParams, prep: S2Prep,
                  ipa: U64, active: Mask, write: bool) -> tuple[_Walk, list[U64]]:
    """Walk stage 2 for every active lane's ipa; return the walk and its key columns."""
    why, pe, setup, _ = prep
    top = np.where(active, ipa >> _u(pe.iasize()) if pe.iasize() < 64 else _u(0), _u(0))
    head = [(top != _u(0)).astype(np.uint64)]   # AArch64.IPAIsOutOfRange
    if why:
        n = len(ipa)
        return _Walk([], np.zeros(n, np.bool_), np.zeros(n, np.uint64),
                     np.zeros(n, np.bool_), []), head
    walk_active = active & (top == _u(0))
    # Inputs in the same 4KB page walk alike (every granule indexes with bits 12 and
    # up): walk each distinct page once, at its base, and add the offsets back.
    if walk_active.any():
        pages, inv = _unique_inverse(ipa[walk_active] >> _u(12))
        w = _walk(setup, pages << _u(12), np.ones(len(pages), np.bool_), _direct,
                  lambda pa: read64_batch(mem, pa, p.ee), p.ha, p.hd and write,
                  dirty_any=p.s2pie)
        inv = inv.reshape(-1)
        n = len(ipa)
        cols: list[U64] = []
        for col in w.cols:
            full = np.zeros(n, np.uint64)
            full[walk_active] = col[inv]
            cols.append(full)
        ok = np.zeros(n, np.bool_)
        ok[walk_active] = w.ok[inv]
        out = np.zeros(n, np.uint64)
        out[walk_active] = w.out[inv] + (ipa[walk_active] & _u(0xFFF))
        upd = np.zeros(n, np.bool_)
        upd[walk_active] = w.may_update[inv]
        return _Walk(cols, ok, out, upd, []), head + cols
    n = len(ipa)
    return _Walk([], np.zeros(n, np.bool_), np.zeros(n, np.uint64), np.zeros(n, np.bool_),
                 []), head


def _direct(desc: U64, live: Mask, level: int) -> tuple[U64, Mask, list[U64], Mask]:
    """A stage-2 table read: the descriptor address is the PA (no translation)."""
    return desc, live.copy(), [], np.zeros(len(desc), np.bool_)


def _s1_columns(p: S1TTWParams, s2: S2TTWParams | None, env: Env, mem: PhysMem,
                va: U64, write: bool, ifetch: bool) -> tuple[list[U64], _Walk]:
    """Walk stage 1 for every lane: its key columns and the walk."""
    n = len(va)
    why, pc = _s1_txsz(p, env.fs, env.choices)
    if not p.mmu_on:
        # s1_disabled_output: bits [AddrTop:PAMax] must be zero; the PA is the VA's low bits.
        pamax = env.fs.pa_max()
        top_bit = 63 if (p.tbid and ifetch) or not p.tbi else 55
        above = (va >> _u(pamax)) & _u((1 << (top_bit + 1 - pamax)) - 1)
        out = va & _u((1 << pamax) - 1)
        fits = above == _u(0)
        return [(~fits).astype(np.uint64)], _Walk([], fits, out, np.zeros(n, np.bool_), [])
    if why:
        return [], _Walk([], np.zeros(n, np.bool_), np.zeros(n, np.uint64),
                         np.zeros(n, np.bool_), [])
    # AArch64.VAIsOutOfRange: bits [AddrTop:iasize] must all equal the range's selector.
    top_bit = 63 if (pc.tbid and ifetch) or not pc.tbi else 55
    width = top_bit + 1 - pc.iasize()
    field = (va >> _u(pc.iasize())) & _u((1 << width) - 1) if width > 0 else np.zeros(
        n, np.uint64)
    want = (1 << width) - 1 if pc.varange.value and width > 0 else 0
    top = (field != _u(want)).astype(np.uint64)
    setup = _s1_setup(pc, env.fs, env.choices)
    fetch: Fetch = _direct
    if s2 is not None:
        s2prep = _s2_prepare(s2, env.fs, env.choices)

        def through_s2(desc: U64, live: Mask, level: int
                       ) -> tuple[U64, Mask, list[U64], Mask]:
            w, cols = _s2_walk_lanes(mem, s2, s2prep, desc, live, False)
            return w.out, w.ok.copy(), cols, w.may_update
        fetch = through_s2

    w = _walk(setup, va, np.ones(n, np.bool_), fetch, lambda pa: read64_batch(mem, pa, pc.ee),
              pc.ha, pc.hd and write, dirty_any=pc.pie)
    return [top] + w.cols, w


def _batch_once(regs: SysRegs, regime: Regime, va: U64, access: AccessDescriptor, env: Env,
                stage1_only: bool, out: _Out, lanes: npt.NDArray[np.intp]) -> int:
    """Answer lanes (positions in out) by the batch, up to the first that might update.

    Lanes in the same 4KB page of VA space read the same descriptors (every granule
    indexes with bits 12 and up, and the range checks look at the top bits), so each
    distinct page is walked once, at its base, and its lanes add their page offset.
    Returns how many of lanes (from the start) were answered.
    """
    mem = env.mem
    first_update = len(lanes)
    groups: list[tuple[npt.NDArray[np.intp], _PageWalk,
                       tuple[S1TTWParams, S2TTWParams | None]]] = []
    two_ranges = regime.has_two_ranges()
    upper = ((va >> _u(55)) & _u(1)).astype(np.bool_) if two_ranges else np.zeros(
        len(va), np.bool_)
    one_range = not upper.any()
    for sel in ((None,) if one_range else (~upper, upper)):
        # One range (the common case): every lane, without gathering them.
        idx = np.arange(len(va), dtype=np.intp) if sel is None else np.nonzero(sel)[0]
        if len(idx) == 0:
            continue
        sva = va if sel is None else va[idx]
        pages, inv = _unique_inverse(sva >> _u(12))
        base = pages << _u(12)
        hw = env.hw_update()
        p = get_s1_ttw_params(regs, regime, int(sva[0]), env.fs, env.choices, hw)
        s2p, _ptw = _stage2_of(regs, regime, env.fs, env.choices, hw)
        cols, w = _s1_columns(p, s2p, env, mem, base, access.write,
                                       access.is_ifetch())
        upd = w.may_update.copy()
        out_pa = w.out
        if s2p is not None and not stage1_only:
            prep = _s2_prepare(s2p, env.fs, env.choices)
            w2, c2 = _s2_walk_lanes(mem, s2p, prep, w.out, w.ok, access.write)
            cols = cols + c2
            upd |= w2.may_update
            out_pa = w2.out
        pw = _PageWalk(inv.reshape(-1), sva & _u(0xFFF), cols, out_pa, w.fetch_ipa + [w.out])
        groups.append((idx, pw, (p, s2p)))
        if upd.any():
            hits = np.nonzero(upd[pw.inv])[0]
            first_update = min(first_update, int(idx[hits[0]]))
    for idx, pw, params in groups:
        if first_update == len(lanes):
            _answer(regs, regime, va, access, env, stage1_only, out, lanes, idx, pw, params)
            continue
        keep = idx < first_update
        if keep.any():
            _answer(regs, regime, va, access, env, stage1_only, out, lanes, idx[keep],
                    pw.select(keep), params)
    return first_update


@dataclass
class _PageWalk:
    """A walk of distinct pages and how lanes map onto them (mechanics of _batch_once).

    inv: each lane's page; off: each lane's offset in it; cols: the pages' key columns;
    out: each page's output address (at its base); ipas: per page, the IPAs stage 2
    translates (each table read's, then stage 1's output).
    """

    inv: npt.NDArray[np.intp]
    off: U64
    cols: list[U64]
    out: U64
    ipas: list[U64]

    def select(self, keep: Mask) -> _PageWalk:
        return _PageWalk(self.inv[keep], self.off[keep], self.cols, self.out, self.ipas)

    def lane_ipa(self, col: int, lanes: Mask) -> U64:
        """Return the col-th stage-2 input of the chosen lanes."""
        got = self.ipas[col][self.inv[lanes]]
        return got + self.off[lanes] if col == len(self.ipas) - 1 else got


def _answer(regs: SysRegs, regime: Regime, va: U64, access: AccessDescriptor, env: Env,
            stage1_only: bool, out: _Out, lanes: npt.NDArray[np.intp],
            idx: npt.NDArray[np.intp], pw: _PageWalk,
            params: tuple[S1TTWParams, S2TTWParams | None]) -> None:
    """Run the scalar path once per distinct key among idx's pages and spread its answer.

    A stage-2 fault of a class's lane is on one of its stage-2 inputs (pw.ipas), and
    every lane of the class faults on its own input in the same place.
    """
    _rep_page, page_class = _classes(pw.cols, len(pw.out))
    # The classes the lanes reach (in class order), one lane of each (a lane of the
    # class's first page), and, where there is more than one, each lane's class: counted
    # on the pages, which are few.
    lane_of_page = np.full(len(pw.out), -1, np.intp)
    lane_of_page[pw.inv] = np.arange(len(pw.inv), dtype=np.intp)
    reached = np.flatnonzero(lane_of_page >= 0)
    classes, first_page = np.unique(page_class[reached], return_index=True)
    rep_pos = lane_of_page[reached[first_page]]
    n_cls = len(classes)
    inverse = np.zeros(0, np.intp)
    if n_cls > 1:
        rank = np.zeros(int(page_class.max()) + 1, np.intp)
        rank[classes] = np.arange(n_cls, dtype=np.intp)
        inverse = rank[page_class][pw.inv]
    lane_out = pw.out[pw.inv]
    lane_out += pw.off
    ok = np.zeros(n_cls, np.bool_)
    par = np.zeros(n_cls, np.uint64)
    fault = np.full(n_cls, -1, np.int8)
    level = np.zeros(n_cls, np.int8)
    s2 = np.zeros(n_cls, np.bool_)
    s1ptw = np.zeros(n_cls, np.bool_)
    attrs = np.full(n_cls, -1, np.int32)
    m1 = np.zeros(n_cls, np.uint8)
    m2 = np.zeros(n_cls, np.uint8)
    ipa_col = np.full(n_cls, -1, np.intp)
    for c in range(n_cls):
        r = int(rep_pos[c])
        lane = int(idx[r])
        got = full_translate(regs, regime, int(va[lane]), access, env, stage1_only)
        par[c] = encode_par(got, env)
        if isinstance(got, FaultRecord):
            fault[c] = FAULTS.index(got.statuscode)
            level[c], s2[c], s1ptw[c] = got.level, got.secondstage, got.s2fs1walk
            if got.secondstage:
                ipa_col[c] = _ipa_column(got, pw, r)
        else:
            ok[c] = True
            attrs[c] = out.attr_index(got.memattrs)
            m1[c], m2[c] = perm_masks(got, *params, env)
            if got.paddress != int(lane_out[r]):
                raise AssertionError(
                    f"batch walk output {int(lane_out[r]):#x} differs from the "
                    f"scalar path's {got.paddress:#x} for VA {int(va[lane]):#x}")
    pos = lanes if len(idx) == len(lanes) else lanes[idx]
    # Where the lanes are consecutive (the common case), write a slice, not a scatter;
    # where they form one class, each class field is one value.
    to: slice | npt.NDArray[np.intp] = pos
    if pos[-1] - pos[0] == len(pos) - 1:
        to = slice(int(pos[0]), int(pos[-1]) + 1)

    def spread(field: npt.NDArray[_T]) -> npt.NDArray[_T]:
        return field[:1] if n_cls == 1 else field[inverse]

    if n_cls == 1 and ok[0]:
        out.pa[to] = lane_out
        lane_out &= _u(PAR_PA_MASK)
        lane_out |= par[0] & _u(~PAR_PA_MASK & (2**64 - 1))
        out.par[to] = lane_out
    else:
        lane_ok = spread(ok)
        out.pa[to] = np.where(lane_ok, lane_out, _u(0))
        out.par[to] = np.where(lane_ok, (spread(par) & _u(~PAR_PA_MASK & (2**64 - 1)))
                               | (lane_out & _u(PAR_PA_MASK)), spread(par))
    out.fault[to] = spread(fault)
    out.level[to] = spread(level)
    out.secondstage[to] = spread(s2)
    out.s2fs1walk[to] = spread(s1ptw)
    out.attrs[to] = spread(attrs)
    out.s1_perms[to] = spread(m1)
    out.s2_perms[to] = spread(m2)
    if (ipa_col >= 0).any():
        lane_col = spread(ipa_col) if n_cls > 1 else np.full(len(pos), ipa_col[0], np.intp)
        for col in np.unique(lane_col[lane_col >= 0]).tolist():
            sel = lane_col == col
            out.ipa[pos[sel]] = pw.lane_ipa(col, sel)


_MIX = np.uint64(0x9E3779B97F4A7C15)


def _classes(cols: list[U64], n: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Return one lane per distinct key (positions) and each lane's class.

    The columns are hashed into one 64-bit word per lane and the words grouped; then
    every lane's columns are compared with its class's first lane, and on any
    difference (a hash collision) the grouping is redone exactly on the columns.
    """
    if not cols:
        return np.zeros(1, np.intp), np.zeros(n, np.intp)
    h = np.zeros(n, np.uint64)
    with np.errstate(over="ignore"):
        for col in cols:
            h = (h ^ col) * _MIX
            h ^= h >> np.uint64(29)
    _, rep_pos, inverse = np.unique(h, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    rep_of_lane = rep_pos[inverse]
    if all(bool((col == col[rep_of_lane]).all()) for col in cols):
        return rep_pos, inverse
    keys = np.stack(cols, axis=1)
    _, rep_pos, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return rep_pos, inverse.reshape(-1)


def _ipa_column(got: FaultRecord, pw: _PageWalk, rep: int) -> int:
    """Return which of the lane's stage-2 inputs a stage-2 fault is on.

    Not on a table walk: stage 1's output (the last). On a table walk: the first table
    read with that IPA (the scalar walk stops at the first read that faults, and equal
    IPAs translate alike).
    """
    if not got.s2fs1walk:
        return len(pw.ipas) - 1
    page = int(pw.inv[rep])
    for j, col in enumerate(pw.ipas[:-1]):
        if int(col[page]) == got.ipaddress:
            return j
    raise AssertionError(f"stage-2 fault on IPA {got.ipaddress:#x} is on no table read "
                         "of the batch's walk")


def translate_batch(regs: SysRegs, regime: Regime, vas: Sequence[int] | U64,
                    access: AccessDescriptor, env: Env, stage1_only: bool = False
                    ) -> BatchResult:
    """Translate every address in vas in regime, as full_translate would, one after another.

    Lanes are in program order: a descriptor update made by one lane is seen by the next.
    Every field equals the scalar path's (see the module docstring for why).
    """
    va = _as_u64(vas)
    if access.el not in REGIME_ELS[regime]:
        els = " and ".join(f"EL{e}" for e in REGIME_ELS[regime])
        raise InputError(f"access.el={access.el}: the {regime.value} regime translates "
                         f"accesses from {els} only")
    n = len(va)
    out = _Out(n)

    def scalar(i: int) -> None:
        v = int(va[i])
        before = len(env.mem.hw_writes)
        out.store(i, full_translate(regs, regime, v, access, env, stage1_only), env,
                  _params(regs, regime, v, env))
        out.write_lanes += [i] * (len(env.mem.hw_writes) - before)
        out.scalar += 1

    if env.tables is not None or haft_on(regs, regime, env):
        for i in range(n):
            scalar(i)
        return out.result()
    start, rounds = 0, 0
    while start < n:
        lanes = np.arange(start, n, dtype=np.intp)
        start += _batch_once(regs, regime, va[start:], access, env, stage1_only, out, lanes)
        if start >= n:
            break
        rounds += 1
        if rounds > MAX_REBATCH:
            for i in range(start, n):
                scalar(i)
            break
        scalar(start)
        start += 1
    return out.result()


def haft_on(regs: SysRegs, regime: Regime, env: Env) -> bool:
    """Return whether a walk in regime may set AF in table descriptors (FEAT_HAFT: either
    VA range's stage-1 haft, or stage 2's). The batch walk has no table update, so such
    a configuration is answered by the scalar path, lane by lane."""
    if not env.fs.has("FEAT_HAFT"):
        return False
    return any(p is not None and p.haft
               for va in (0, (1 << 64) - 1) for p in _params(regs, regime, va, env))


def _params(regs: SysRegs, regime: Regime, va: int, env: Env
            ) -> tuple[S1TTWParams, S2TTWParams | None]:
    hw = env.hw_update()
    s1p = get_s1_ttw_params(regs, regime, va, env.fs, env.choices, hw)
    return s1p, _stage2_of(regs, regime, env.fs, env.choices, hw)[0]


def _as_u64(vas: Sequence[int] | U64) -> U64:
    if isinstance(vas, np.ndarray):
        if vas.dtype != np.uint64:
            raise InputError(f"vas: a batch of addresses is a uint64 array, not {vas.dtype}")
        return vas
    try:
        return np.array(vas, dtype=np.uint64)
    except (OverflowError, TypeError, ValueError):
        bad = next((v for v in vas if not (isinstance(v, int) and 0 <= v < 1 << 64)), None)
        shown = f"{bad:#x}" if isinstance(bad, int) else repr(bad)
        raise InputError(f"va={shown}: a virtual address is 64 bits (0..2^64-1)") from None


@dataclass(frozen=True)
class AtBatch:
    """What a batch of one AT instruction did, lane by lane.

    par: PAR_EL1 where the AT wrote it; exceptions: None there, or the exception the AT
    took (UNDEFINED, or a stage-2 fault taken to EL2 from EL1); write_lanes: for each
    descriptor update the batch made (in memory's hw_writes order), the lane that made it.
    """

    par: U64
    exceptions: list[AtResult | None]
    write_lanes: tuple[int, ...]


def at_batch(op: AtOp, vas: Sequence[int] | U64, el: int, pan: bool, regs: SysRegs,
             env: Env) -> AtBatch:
    """Execute AT op on every address, in order, as execute_at would."""
    from s2mmu.arch.at import at_regime
    va = _as_u64(vas)
    undef = at_undefined_reason(op, el, env)
    if undef:   # execute_at: the AT itself is UNDEFINED at el
        first: AtResult = AtException(el, esr_undefined(), reason=undef)
        return AtBatch(np.zeros(len(va), np.uint64), [first] * len(va), ())
    regime, perm_el = at_regime(op, regs)
    access = acc_at(perm_el, op.write, pan=op.pan_aware and pan, any_access=op.any_access)
    res = translate_batch(regs, regime, va, access, env, stage1_only=op.stage == 1)
    exc: list[AtResult | None] = [None] * len(va)
    if el == 1:
        # at_outcome: a stage-2 fault of an AT executed at EL1 is taken to EL2. The
        # FaultRecord is rebuilt from the lane's fields (all that the syndrome reads).
        for i in np.nonzero(res.secondstage & (res.fault >= 0))[0].tolist():
            fault = FaultRecord(FAULTS[int(res.fault[i])], int(res.level[i]), access,
                                secondstage=True, s2fs1walk=bool(res.s2fs1walk[i]),
                                vaddress=int(va[i]), ipaddress=int(res.ipa[i]))
            exc[i] = stage2_exception(fault, int(va[i]))
    return AtBatch(res.par, exc, res.write_lanes)


@dataclass(frozen=True)
class BatchRun:
    """Consecutive lanes that translate alike: one line of a range translation.

    va_first/va_last: the first and last lane's address; count: how many lanes. pa_first is
    the first lane's output (None for a fault), and the lanes' outputs advance with their
    addresses. fault is None where the lanes translated.
    """

    va_first: int
    va_last: int
    count: int
    pa_first: int | None
    fault: Fault | None
    level: int
    secondstage: bool
    s2fs1walk: bool
    attrs: MemoryAttributes | None
    s1_perms: int
    s2_perms: int


def coalesce(vas: U64, res: BatchResult) -> list[BatchRun]:
    """Return the runs of lanes with the same answer whose outputs advance with the input."""
    n = len(res)
    if n == 0:
        return []
    same = np.ones(n, np.bool_)
    same[0] = False
    for field in (res.fault, res.level, res.secondstage, res.s2fs1walk, res.attrs,
                  res.s1_perms, res.s2_perms):
        same[1:] &= field[1:] == field[:-1]
    ok = res.fault < 0
    with np.errstate(over="ignore"):
        step_ok = (res.pa[1:] - res.pa[:-1]) == (vas[1:] - vas[:-1])
    same[1:] &= ~ok[1:] | step_ok
    starts = np.nonzero(~same)[0].tolist() + [n]
    runs = []
    for a, b in zip(starts, starts[1:], strict=False):
        f = int(res.fault[a])
        runs.append(BatchRun(
            int(vas[a]), int(vas[b - 1]), b - a, int(res.pa[a]) if f < 0 else None,
            None if f < 0 else FAULTS[f], int(res.level[a]), bool(res.secondstage[a]),
            bool(res.s2fs1walk[a]), res.attr_table[int(res.attrs[a])] if f < 0 else None,
            int(res.s1_perms[a]), int(res.s2_perms[a])))
    return runs

