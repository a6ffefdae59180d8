"""The nested layer of scenarios: an L1 guest hypervisor, its L2 guest, KVM's shadow stage 2.

Table ``[nested]`` (vCPU 0 runs a guest hypervisor; the kvm tables give the VM, its
memslots and host memory):

- ``granule`` ("4K", "16K", "64K"), ``t0sz``, ``sl0``, ``ps``, ``vmid``, ``tables`` (the
  guest-physical address where the builder writes L1's stage-2 tables): L1's VTCR_EL2
  and VTTBR_EL2 are built from them;
- ``[[nested.map]]``: L1's stage-2 mappings (``l2_ipa``, ``ipa``, ``size``, ``perms`` "RW"
  "R" "W" or "", ``xn``, ``level``), written into guest memory by the table builder;
- ``[[nested.desc]]``: raw descriptor words (``gpa``, ``value``) written after the maps;
- ``[[nested.s1map]]``: stage-1 mappings for AT (``regime`` "el2" with tables at a
  guest-physical address, or "el1" with tables at an L2 IPA written through L1's stage 2;
  ``tables``, ``va``, ``oa``, ``size``, ``ro``, ``el0``, ``xn``);
- ``regs``: any register by its Arm name (VTCR_EL2, VTTBR_EL2, HCR_EL2, SCTLR_EL2, TCR_EL2,
  TTBR0_EL2, MAIR_EL2, SCTLR_EL1, TCR_EL1, TTBR0_EL1, MAIR_EL1 ...): overrides what the
  tables give;
The guest hypervisor's features are its ID registers: the VM's (``[host] features`` adds
FEAT_* names to the host CPU's, ``[vm] id_regs`` lowers them) limited as KVM limits them
for a guest hypervisor (s2mmu.nested.nested.limit_nv_id_regs: no FEAT_XNX, TTL forced,
PARange at most 48 bits ...). The AT emulation follows the at.c of the scenario's kernel
release (``[kvm] profile``; a release without at.c refuses ``l1_at``).

Events: ``l2_read``/``l2_write``/``l2_exec`` (``ipa``: an L2 access with its MMU off, or
``va``: through L2's stage 1; stage 2 is the shadow; each abort goes to
kvm_handle_guest_abort's nested branch);
``l1_tlbi`` (``op`` IPAS2E1IS, IPAS2LE1IS, RIPAS2E1IS, RIPAS2LE1IS, VMALLS12E1IS, VMALLE1IS;
``xt`` raw, or ``ipa`` with ``ttl_level`` (and ``ttl_granule``), or for the range forms
``ipa``, ``tg``, ``scale``, ``num``, ``ttl_level``); ``l1_at`` (``op`` any AT, ``va``,
``pan``, ``pan_check`` "architecture" or "el0-probe": seed 001's first approach);
``l1_unmap`` (``l2_ipa``: L1 writes an invalid descriptor over its leaf);
``l1_map`` (one more mapping, as in [[nested.map]]); ``l2_enter`` (``regs``: L1 sets EL2
registers and enters L2 again; vCPU 0 loads the shadow they select, recycling one when
none matches).

Expectations: expect_esr (the ESR injected into L1), expect_shadow ({l2_ipa, size,
perms}: the shadow leaf after the step, size "none" for nothing), expect_par (PAR_EL1),
expect_path ("fast", "slow"). The shadow stage-2 invariant (s2mmu.nested.invariants) is
checked after every step.

Kernel: arch/arm64/kvm/mmu.c (kvm_handle_guest_abort), nested.c, sys_regs.c
(handle_ipas2e1is, handle_ripas2e1is, handle_vmalls12e1is, handle_tlbi_el1), at.c.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

from s2mmu.arch.at import AtOp
from s2mmu.arch.builder import BumpAllocator, TableBuilder, s1_attrs, s2_attrs
from s2mmu.arch.errors import InputError
from s2mmu.arch.faults import FaultRecord
from s2mmu.arch.inputs import shorten
from s2mmu.arch.params import Granule
from s2mmu.arch.registers import TCR_EL1, TCR_EL2_E2H0, VTCR_EL2
from s2mmu.arch.state import SysRegs
from s2mmu.kvm.abort import InjectedS2Fault, Resumed, ResumeReason
from s2mmu.kvm.cpu import HCR_EL2_RW, Completed, GuestFault, guest_access
from s2mmu.kvm.host import host_usable_pa_bits
from s2mmu.nested.at import AtContext, AtProfile, PanCheck, ShadowS2, kvm_at, kvm_at_undefined
from s2mmu.nested.guest import MemslotMemory
from s2mmu.nested.invariants import NestedViolation, check_nested_invariants
from s2mmu.nested.mmu import (
    HCR_VM,
    NestedKvm,
    ShadowS1Tlbi,
    ShadowUnmap,
    current_mmu,
    encode_ipas2_xt,
    encode_range_xt,
    get_vmid,
    handle_ipas2e1is,
    handle_ripas2e1is,
    handle_tlbi_el1,
    handle_vmalls12e1is,
    kvm_nested_handle_guest_abort,
    kvm_s2_mmu_valid,
    kvm_vcpu_init_nested,
    kvm_vcpu_load_hw_mmu,
    kvm_vcpu_put_hw_mmu,
    lookup_s2_mmu,
)
from s2mmu.nested.nested import (
    NestedVm,
    NestedWalkError,
    kvm_start_level,
    kvm_walk_nested_s2,
    nested_features,
)
from s2mmu.pgtable.prot import (
    KVM_PGTABLE_PROT_PX,
    KVM_PGTABLE_PROT_R,
    KVM_PGTABLE_PROT_UX,
    KVM_PGTABLE_PROT_W,
    kvm_pgtable_stage2_pte_prot,
)
from s2mmu.pgtable.pte import kvm_granule_size, kvm_pte_to_phys, kvm_pte_valid
from s2mmu.pgtable.vtcr import kvm_get_vttbr
from s2mmu.pgtable.walk import kvm_pgtable_get_leaf
from s2mmu.scenario.kvm_events import SHOWN_EVENTS, KvmWorld
from s2mmu.scenario.records import FaultStep, Mismatch, Outcome, StepDraft, World
from s2mmu.scenario.schema import (
    REGISTRY,
    Checker,
    Event,
    EventKind,
    Expectation,
    ExpectationKind,
    Invariant,
    Item,
    Layer,
    ParseContext,
    ScenarioError,
    common_fields,
)

NESTED_KEYS = {"granule", "t0sz", "sl0", "ps", "vmid", "tables", "map", "desc", "s1map",
               "regs"}
GONE_KEYS = {"features": "the guest hypervisor's features come from the VM's ID registers: "
                         "add host CPU features with [host] features = [\"FEAT_...\"], "
                         "lower them with [vm] id_regs",
             "without": "lower the VM's ID registers with [vm] id_regs (the guest "
                        "hypervisor's features are the VM's, limited by limit_nv_id_regs)"}
MAP_KEYS = {"l2_ipa", "ipa", "size", "perms", "xn", "level"}
DESC_KEYS = {"gpa", "value"}
S1MAP_KEYS = {"regime", "tables", "va", "oa", "size", "ro", "el0", "xn"}
GRANULES = {"4K": Granule.G4K, "16K": Granule.G16K, "64K": Granule.G64K}
TG0 = {Granule.G4K: 0b00, Granule.G16K: 0b10, Granule.G64K: 0b01}
S2AP = {"": 0b00, "R": 0b01, "W": 0b10, "RW": 0b11}
TABLE_SPACE = 16 << 20
"""How much guest memory the builder may use for L1's tables from [nested] tables."""
MAX_L2_ATTEMPTS = 16
L2_ACCESSES = {"l2_read": "read", "l2_write": "write", "l2_exec": "exec"}


class TlbiOp(enum.Enum):
    """An L1 TLBI KVM emulates for the shadow stage 2s (by its Arm name)."""

    IPAS2E1IS = "IPAS2E1IS"
    IPAS2LE1IS = "IPAS2LE1IS"
    RIPAS2E1IS = "RIPAS2E1IS"
    RIPAS2LE1IS = "RIPAS2LE1IS"
    VMALLS12E1IS = "VMALLS12E1IS"
    VMALLE1IS = "VMALLE1IS"

    @property
    def is_range(self) -> bool:
        return self in (TlbiOp.RIPAS2E1IS, TlbiOp.RIPAS2LE1IS)

    @property
    def by_ipa(self) -> bool:
        return self in (TlbiOp.IPAS2E1IS, TlbiOp.IPAS2LE1IS)


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class L1Map:
    """One mapping of L1's stage 2: L2 IPA -> guest PA, with S2AP and XN."""

    l2_ipa: int
    ipa: int
    size: int
    s2ap: int
    xn: int
    level: int | None
    key: str


@dataclass(frozen=True)
class RawDesc:
    """A raw descriptor word L1 writes at a guest PA."""

    gpa: int
    value: int
    key: str


@dataclass(frozen=True)
class S1Map:
    """A stage-1 mapping for AT: the EL2 regime's (tables at a guest PA) or L2's EL1&0
    regime's (tables at an L2 IPA)."""

    regime: str
    tables: int
    va: int
    oa: int
    size: int
    ro: bool
    el0: bool
    xn: bool
    key: str


@dataclass(frozen=True)
class NestedConfig:
    """The guest hypervisor: its stage-2 shape, its mappings and its registers (its
    features are the VM's ID registers, limited: nested_features)."""

    granule: Granule
    t0sz: int
    sl0: int
    ps: int
    vmid: int
    tables: int
    maps: tuple[L1Map, ...]
    descs: tuple[RawDesc, ...]
    s1maps: tuple[S1Map, ...]
    regs: tuple[tuple[str, int], ...]
    path: str
    lines: tuple[tuple[str, int], ...]

    def line(self, key: str) -> int:
        """Return the line of a [nested] key (the table's line if not found)."""
        return dict(self.lines).get(key, dict(self.lines).get("", 1))


def _int(c: Checker, key: str, v: Any, hi: int | None = None) -> int:
    n = c.size("nested", None, key, v)
    if hi is not None and n > hi:
        raise c.fail("nested", None, key, f"must be 0..{hi}, not {n}")
    return n


def _subtables(c: Checker, t: dict[str, Any], key: str, allowed: set[str],
               need: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
    raw = t.get(key, [])
    if not isinstance(raw, list):
        raise c.fail("nested", None, key, f"use [[nested.{key}]] (an array of tables), "
                                          f"not {shorten(raw)}")
    out = []
    for j, d in enumerate(raw):
        name = f"{key}[{j}]"
        if not isinstance(d, dict):
            raise c.fail("nested", None, key, f"{name}: must be a table, not {shorten(d)}")
        for k in d:
            if k not in allowed:
                raise c.fail("nested", None, key, f"{name}.{shorten(k)}: unknown field "
                                                  f"(known: {', '.join(sorted(allowed))})")
        for k in need:
            if k not in d:
                raise c.fail("nested", None, key, f"{name}: missing field {k!r}")
        out.append((name, d))
    return out


def _field_int(c: Checker, name: str, d: dict[str, Any], k: str, default: int = 0) -> int:
    try:
        return c.size("nested", None, k, d.get(k, default))
    except ScenarioError as e:
        raise c.fail("nested", None, name.split("[")[0],
                     f"{name}.{k}: {str(e).split(': ', 2)[-1]}") from None


def _field_bool(c: Checker, name: str, d: dict[str, Any], k: str) -> bool:
    v = d.get(k, False)
    if not isinstance(v, bool):
        raise c.fail("nested", None, name.split("[")[0],
                     f"{name}.{k}: must be true or false, not {shorten(v)}")
    return v


def _maps(c: Checker, t: dict[str, Any], g: Granule) -> tuple[L1Map, ...]:
    out = []
    for name, d in _subtables(c, t, "map", MAP_KEYS, ("l2_ipa", "ipa", "size")):
        perms = d.get("perms", "RW")
        if perms not in S2AP:
            raise c.fail("nested", None, "map", f"{name}.perms: must be one of \"RW\", \"R\", "
                                                f"\"W\", \"\", not {shorten(perms)}")
        level = _field_int(c, name, d, "level") if "level" in d else None
        if level is not None and not 1 <= level <= 3:
            raise c.fail("nested", None, "map", f"{name}.level: must be 1..3, not {level}")
        m = L1Map(_field_int(c, name, d, "l2_ipa"), _field_int(c, name, d, "ipa"),
                  _field_int(c, name, d, "size"), S2AP[perms],
                  0b10 if _field_bool(c, name, d, "xn") else 0, level, name)
        step = g.block_size(3 if level is None else level)
        for k in ("l2_ipa", "ipa", "size"):
            if getattr(m, k) % step or m.size == 0:
                raise c.fail("nested", None, "map", f"{name}.{k}: {getattr(m, k):#x} is not a "
                                                    f"non-zero multiple of {step:#x} (the leaf)")
        out.append(m)
    return tuple(out)


def _s1maps(c: Checker, t: dict[str, Any]) -> tuple[S1Map, ...]:
    out = []
    need = ("regime", "tables", "va", "oa", "size")
    for name, d in _subtables(c, t, "s1map", S1MAP_KEYS, need):
        if d["regime"] not in ("el1", "el2"):
            raise c.fail("nested", None, "s1map", f"{name}.regime: must be \"el1\" or \"el2\", "
                                                  f"not {shorten(d['regime'])}")
        tables, va, oa, size = (_field_int(c, name, d, k) for k in need[1:])
        m = S1Map(str(d["regime"]), tables, va, oa, size, _field_bool(c, name, d, "ro"),
                  _field_bool(c, name, d, "el0"), _field_bool(c, name, d, "xn"), name)
        for k in ("tables", "va", "oa", "size"):
            if getattr(m, k) % 4096 or m.size == 0:
                raise c.fail("nested", None, "s1map", f"{name}.{k}: {getattr(m, k):#x} is not "
                                                      "a non-zero multiple of 4K")
        if m.va + m.size > 1 << 39:
            raise c.fail("nested", None, "s1map", f"{name}.va: va..va+size must lie below 2^39 "
                                                  "(a 39-bit TTBR0 stage 1)")
        out.append(m)
    return tuple(out)


def _regs(c: Checker, t: dict[str, Any]) -> tuple[tuple[str, int], ...]:
    raw = t.get("regs", {})
    if not isinstance(raw, dict):
        raise c.fail("nested", None, "regs", f"must be a table like {{ HCR_EL2 = 0x80000001 }}, "
                                             f"not {shorten(raw)}")
    out = []
    for k, v in raw.items():
        if k not in SysRegs.names():
            raise c.fail("nested", None, "regs", f"{shorten(k)}: not a register the model has "
                                                 f"(known: {', '.join(SysRegs.names())})")
        try:
            out.append((str(k), c.size("nested", None, "regs", v)))
        except ScenarioError as e:
            raise c.fail("nested", None, "regs", f"{k}: {str(e).split(': ', 2)[-1]}") from None
    return tuple(out)


def parse_nested(c: Checker, data: dict[str, Any],
                 ctx: ParseContext) -> tuple[NestedConfig | None, list[Event]]:
    """Parse [nested]; None when the scenario has none."""
    if "nested" not in data:
        return None, []
    raw = data["nested"]
    for key, why in GONE_KEYS.items():
        if isinstance(raw, dict) and key in raw:
            raise c.fail("nested", None, key, f"not a [nested] key: {why}")
    t = c.keys("nested", None, raw, NESTED_KEYS)
    g = GRANULES[c.choice("nested", None, "granule", t.get("granule", "4K"), set(GRANULES))]
    t0sz = _int(c, "t0sz", t.get("t0sz", 24), 63)
    sl0 = _int(c, "sl0", t.get("sl0", 1), 3)
    ps = _int(c, "ps", t.get("ps", 2), 7)
    vmid = _int(c, "vmid", t.get("vmid", 1), 0xFFFF)
    tables = _int(c, "tables", t.get("tables", 0))
    c.aligned("nested", None, "tables", tables, 4096)
    lines = tuple((k, c.line("nested", None, k)) for k in t) + (("", c.line("nested", None,
                                                                            None)),)
    return NestedConfig(g, t0sz, sl0, ps, vmid, tables, _maps(c, t, g),
                        tuple(RawDesc(_field_int(c, n, d, "gpa"), _field_int(c, n, d, "value"),
                                      n)
                              for n, d in _subtables(c, t, "desc", DESC_KEYS, ("gpa", "value"))),
                        _s1maps(c, t), _regs(c, t), c.path,
                        lines), []


# -- world state -------------------------------------------------------------------------------


@dataclass
class NestedWorld:
    """The nested layer's running state (nk is None when the scenario has no [nested])."""

    nk: NestedKvm | None = None
    regs: SysRegs = field(default_factory=SysRegs)
    mem: MemslotMemory | None = None
    builder: TableBuilder | None = None
    stale: list[tuple[int, int]] = field(default_factory=list)
    """L2 IPA ranges L1 changed and has not invalidated yet: a shadow may still hold the
    old translation there (a TLB may, until the TLBI), so the invariant skips them."""


def build_nested(world: World, config: NestedConfig | None) -> None:
    """Add the layer's (empty) state: L1's memory exists only once the memslots do."""
    world.add(NestedWorld())


def _fail(config: NestedConfig, key: str, msg: str) -> ScenarioError:
    return ScenarioError(f"{config.path}:{config.line(key)}: nested.{key}: {msg}")


def write_l1_stage2(config: NestedConfig, mem: MemslotMemory) -> TableBuilder:
    """Write L1's stage 2 ([[nested.map]], then [[nested.desc]]) into guest memory."""
    start = kvm_start_level(config.granule, config.sl0)
    if not isinstance(mem.read64(config.tables), int):
        raise _fail(config, "tables", f"{config.tables:#x} is outside guest memory (no memslot "
                                      "backs it): L1's tables live in its RAM")
    try:
        b = TableBuilder(GuestImage(mem), BumpAllocator(config.tables, config.tables + TABLE_SPACE,
                                            config.granule.size),
                         config.granule, 64 - config.t0sz, start)
    except (ValueError, InputError) as e:
        raise _fail(config, "tables", str(e)) from None
    for m in config.maps:
        try:
            b.map(m.l2_ipa, m.ipa, m.size, s2_attrs(s2ap=m.s2ap, xn=m.xn), level=m.level)
        except (ValueError, InputError, IndexError) as e:
            raise _fail(config, "map", f"{m.key}: {e}") from None
    for d in config.descs:
        try:
            mem.write64(d.gpa, d.value)
        except ValueError as e:
            raise _fail(config, "desc", f"{d.key}: {e}") from None
    return b


def l1_regs(config: NestedConfig, root: int) -> SysRegs:
    """Return L1's EL2/EL1 registers: built from [nested], then [nested.regs] over them."""
    vtcr = VTCR_EL2.encode(T0SZ=config.t0sz, SL0=config.sl0, TG0=TG0[config.granule],
                           PS=config.ps, SH0=3, ORGN0=1, IRGN0=1)
    regs = replace(SysRegs(), VTCR_EL2=vtcr, VTTBR_EL2=root | config.vmid << 48,
                   HCR_EL2=HCR_EL2_RW | HCR_VM)
    return replace(regs, **dict(config.regs))


class GuestImage:
    """Guest memory as a table builder writes it (a read outside it is bad input)."""

    def __init__(self, mem: MemslotMemory) -> None:
        self.mem = mem

    def read64(self, addr: int, big_endian: bool = False) -> int:
        got = self.mem.read64(addr, big_endian)
        if not isinstance(got, int):
            raise ValueError(got.reason)
        return got

    def write64(self, addr: int, value: int, big_endian: bool = False) -> None:
        self.mem.write64(addr, value, big_endian)


class L2View:
    """L2's IPA space, written through L1's stage 2 (for L2's stage-1 tables)."""

    def __init__(self, nk: NestedKvm, regs: SysRegs, mem: MemslotMemory) -> None:
        self.nk, self.regs, self.mem = nk, regs, mem

    def _gpa(self, ipa: int) -> int:
        t = kvm_walk_nested_s2(self.nk.vm, self.regs, ipa)
        if isinstance(t, NestedWalkError) or t.esr:
            raise ValueError(f"L2 IPA {ipa:#x} is not mapped by L1's stage 2")
        return t.output

    def read64(self, addr: int, big_endian: bool = False) -> int:
        return GuestImage(self.mem).read64(self._gpa(addr), big_endian)

    def write64(self, addr: int, value: int, big_endian: bool = False) -> None:
        self.mem.write64(self._gpa(addr), value, big_endian)


SCTLR_MCI = 1 << 0 | 1 << 2 | 1 << 12
"""SCTLR_ELx.{M, C, I}: the stage 1 on, data and instruction accesses cacheable."""
MAIR_S1 = 0x00_44_04_FF
"""Attr0 Normal WB, Attr1 Device-nGnRE, Attr2 Normal NC."""


def write_stage1(config: NestedConfig, nk: NestedKvm, regs: SysRegs,
                 mem: MemslotMemory) -> SysRegs:
    """Write the [[nested.s1map]] stage 1s (4K, 39-bit TTBR0); return the registers."""
    builders: dict[tuple[str, int], TableBuilder] = {}
    for m in config.s1maps:
        view: GuestImage | L2View = GuestImage(mem) if m.regime == "el2" else \
            L2View(nk, regs, mem)
        try:
            b = builders.get((m.regime, m.tables))
            if b is None:
                b = builders[m.regime, m.tables] = TableBuilder(
                    view, BumpAllocator(m.tables, m.tables + (1 << 20)), Granule.G4K, 39, 1)
            b.map(m.va, m.oa, m.size, s1_attrs(ro=m.ro, el0=m.el0, pxn=m.xn, uxn=m.xn))
        except (ValueError, InputError) as e:
            raise _fail(config, "s1map", f"{m.key}: {e}") from None
        if m.regime == "el2":
            regs = replace(regs, TTBR0_EL2=b.root, MAIR_EL2=MAIR_S1,
                           SCTLR_EL2=regs.SCTLR_EL2 | SCTLR_MCI,
                           TCR_EL2=TCR_EL2_E2H0.encode(T0SZ=25, TG0=0, IRGN0=1, ORGN0=1, SH0=3,
                                                       PS=2, HA=1))
        else:
            regs = replace(regs, TTBR0_EL1=b.root, MAIR_EL1=MAIR_S1,
                           SCTLR_EL1=regs.SCTLR_EL1 | SCTLR_MCI,
                           TCR_EL1=TCR_EL1.encode(T0SZ=25, EPD1=1, TG0=0, IRGN0=1, ORGN0=1,
                                                  SH0=3, IPS=2, HA=1))
    return replace(regs, **dict(config.regs))


def ready_nested(world: World, config: NestedConfig | None) -> None:
    """Write L1's tables into guest memory, build the shadow pool, enter L2 on vCPU 0."""
    if config is None:
        return
    kw = world.part(KvmWorld)
    nw = world.part(NestedWorld)
    mem = MemslotMemory(kw.kvm)
    b = write_l1_stage2(config, mem)
    ipa_limit = host_usable_pa_bits(kw.kvm.host.features.pa_bits)
    nk = NestedKvm(kw.kvm, NestedVm(nested_features(kw.kvm), ipa_limit, kw.kvm.host.mem, mem))
    regs = l1_regs(config, b.root)
    regs = write_stage1(config, nk, regs, mem)
    kvm_vcpu_init_nested(nk)
    kvm_vcpu_load_hw_mmu(nk, kw.vcpus[0], regs)
    nw.nk, nw.regs, nw.mem, nw.builder = nk, regs, mem, b


def _nk(world: World) -> NestedKvm:
    nk = world.part(NestedWorld).nk
    assert nk is not None, "a nested event without [nested] is refused at parse time"
    return nk


# -- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class L2Access(Event):
    """An L2 access: by L2 IPA with L2's MMU off, or by VA through L2's stage 1 (L1's
    EL1 registers, [[nested.s1map]] regime "el1"); stage 2 is the shadow."""

    access: str
    ipa: int | None = None
    va: int | None = None


@dataclass(frozen=True, kw_only=True)
class L1Tlbi(Event):
    """An L1 TLBI by its Arm name, with its Xt."""

    op: TlbiOp
    xt: int


@dataclass(frozen=True, kw_only=True)
class L1At(Event):
    """An AT instruction L1 executes at virtual EL2 with PSTATE.PAN = pan; pan_check: how
    S1E1RP/WP decide that PAN denies (the architecture's rule, or seed 001's EL0 probe)."""

    op: AtOp
    va: int
    pan: bool = False
    pan_check: PanCheck = PanCheck.ARCHITECTURE


@dataclass(frozen=True, kw_only=True)
class L1Unmap(Event):
    """L1 writes an invalid descriptor over the leaf of its stage 2 that maps l2_ipa."""

    l2_ipa: int


@dataclass(frozen=True, kw_only=True)
class L1MapEvent(Event):
    """L1 adds a mapping to its stage 2 (no TLBI needed: the shadow has none for it)."""

    map: L1Map


@dataclass(frozen=True, kw_only=True)
class L2Enter(Event):
    """L1 sets EL2 registers (by Arm name) and enters L2 again: vCPU 0 puts its shadow and
    loads the one L1's new registers select (looked up, or recycled round robin)."""

    regs: tuple[tuple[str, int], ...]


NestedEvent = L2Access | L1Tlbi | L1At | L1Unmap | L1MapEvent | L2Enter
"""The nested layer's events: a closed union."""


# -- step results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class L2Completed:
    """The L2 access (at addr: an L2 IPA, or a VA) translated to pa."""

    addr: int
    pa: int


@dataclass(frozen=True)
class L2Faulted:
    """L2's own stage 1 faulted: L2's exception, neither KVM nor L1 involved."""

    fault: FaultRecord


@dataclass(frozen=True)
class TlbiDone:
    """KVM's emulation of an L1 TLBI: Xt decoded, the shadow ranges emptied, the stage-1
    invalidations repeated on shadows (VMALLE1IS)."""

    op: TlbiOp
    xt: int
    unmapped: tuple[ShadowUnmap, ...]
    s1: tuple[ShadowS1Tlbi, ...] = ()


@dataclass(frozen=True)
class TlbiUndefined:
    """The VM's ID registers do not offer the TLBI: KVM injects UNDEFINED into L1."""

    op: TlbiOp
    feature: str


@dataclass(frozen=True)
class AtUndefined:
    """The guest hypervisor's ID registers do not offer the AT: KVM injects UNDEFINED into
    L1 (kvm_at_undefined says why)."""

    op: AtOp
    reason: str


@dataclass(frozen=True)
class AtDone:
    """What KVM wrote to L1's PAR_EL1 for an AT, and by which path."""

    op: AtOp
    va: int
    par: int
    path: str
    fast_par: int | None


@dataclass(frozen=True)
class L1Unmapped:
    """L1 zeroed its leaf descriptor at gpa (level) for l2_ipa; the shadow is now stale
    until L1 invalidates."""

    l2_ipa: int
    gpa: int
    level: int


@dataclass(frozen=True)
class L1Mapped:
    """L1 added a mapping to its stage 2."""

    map: L1Map


@dataclass(frozen=True)
class L2Entered:
    """vCPU 0 runs L2 on the shadow with host VMID shadow_vmid, keyed by L1's VMID: found by
    lookup_s2_mmu, or taken over (recycled_vmid: the L1 VMID it held before, its tables
    emptied by the pending unmap)."""

    vmid: int
    shadow_vmid: int
    found: bool
    recycled_vmid: int | None


# -- running events ----------------------------------------------------------------------------


def l2_regs(nk: NestedKvm, world: World, stage1: bool) -> SysRegs:
    """Return the registers L2 runs with: stage 2 = vCPU 0's shadow; stage 1 off, or the
    EL1 state L1 gave L2."""
    kw = world.part(KvmWorld)
    mmu = current_mmu(nk, kw.vcpus[0])
    pgt = kw.kvm.pgt if mmu is None else mmu.pgt
    vttbr = kvm_get_vttbr(pgt.pgd or 0, pgt.s2_mmu.vmid, kw.kvm.env.g)
    regs = SysRegs(HCR_EL2=HCR_EL2_RW | HCR_VM, VTCR_EL2=kw.kvm.vtcr, VTTBR_EL2=vttbr)
    if not stage1:
        return regs
    l1 = world.part(NestedWorld).regs
    return replace(regs, SCTLR_EL1=l1.SCTLR_EL1, TCR_EL1=l1.TCR_EL1, MAIR_EL1=l1.MAIR_EL1,
                   TTBR0_EL1=l1.TTBR0_EL1, TTBR1_EL1=l1.TTBR1_EL1)


def run_l2_access(world: World, ev: L2Access, draft: StepDraft) -> Outcome:
    """Run an L2 access until it completes or KVM answers with something else than a
    resume (an L1 fault injected, an error, an exit)."""
    nk = _nk(world)
    kw = world.part(KvmWorld)
    l1 = world.part(NestedWorld).regs
    outcome = Outcome.RESUMED
    addr = ev.ipa if ev.va is None else ev.va
    assert addr is not None
    for _ in range(MAX_L2_ATTEMPTS):
        o = guest_access(kw.kvm, l2_regs(nk, world, ev.va is not None), addr, ev.access)
        if isinstance(o, Completed):
            draft.result = L2Completed(addr, o.out.paddress)
            return Outcome.COMPLETED
        if isinstance(o, GuestFault):
            draft.result = L2Faulted(o.fault)
            return Outcome.GUEST_FAULT
        mark = len(kw.kvm.env.events)
        out = kvm_nested_handle_guest_abort(nk, kw.vcpus[0], l1, o.abort)
        shown = tuple(e for e in kw.kvm.env.events.since(mark) if isinstance(e, SHOWN_EVENTS))
        draft.faults.append(FaultStep(o.abort, out, shown))
        outcome = draft.faults[-1].outcome
        if isinstance(out.result, Resumed) and out.result.reason is not ResumeReason.CM_SKIPPED:
            continue
        return outcome
    return outcome


def run_tlbi(world: World, ev: L1Tlbi, draft: StepDraft) -> Outcome:
    """Emulate an L1 TLBI as KVM's sys_regs.c handler for it does; the L1 changes it
    covers are no longer pending."""
    emulate_tlbi(world, ev, draft)
    nw = world.part(NestedWorld)
    if isinstance(draft.result, TlbiDone):
        done = draft.result.unmapped
        nw.stale = [(a, n) for a, n in nw.stale
                    if not any(u.ipa <= a and a + n <= u.ipa + u.size for u in done)]
    return Outcome.DONE


def emulate_tlbi(world: World, ev: L1Tlbi, draft: StepDraft) -> None:
    """Run the TLBI's handler; its typed result goes in the draft."""
    nk = _nk(world)
    regs = world.part(NestedWorld).regs
    if ev.op.is_range:
        got = handle_ripas2e1is(nk, regs, ev.xt)
        draft.result = TlbiUndefined(ev.op, "FEAT_TLBIRANGE") if got is None else \
            TlbiDone(ev.op, ev.xt, tuple(got))
    elif ev.op.by_ipa:
        draft.result = TlbiDone(ev.op, ev.xt, tuple(handle_ipas2e1is(nk, regs, ev.xt)))
    elif ev.op is TlbiOp.VMALLS12E1IS:
        draft.result = TlbiDone(ev.op, ev.xt, tuple(handle_vmalls12e1is(nk, regs)))
    else:
        draft.result = TlbiDone(ev.op, ev.xt, (), tuple(handle_tlbi_el1(nk, regs)))


def run_enter(world: World, ev: L2Enter, draft: StepDraft) -> Outcome:
    """Put vCPU 0's shadow, set L1's registers, load the shadow they select."""
    nk = _nk(world)
    nw = world.part(NestedWorld)
    vcpu = world.part(KvmWorld).vcpus[0]
    kvm_vcpu_put_hw_mmu(nk, vcpu)
    nw.regs = replace(nw.regs, **dict(ev.regs))
    found = lookup_s2_mmu(nk, nw.regs)
    before = {id(m): (kvm_s2_mmu_valid(m), get_vmid(m.tlb_vttbr)) for m in nk.mmus}
    mmu = kvm_vcpu_load_hw_mmu(nk, vcpu, nw.regs)
    valid, old = before[id(mmu)]
    recycled = old if found is None and valid else None
    draft.result = L2Entered(get_vmid(nw.regs.VTTBR_EL2), mmu.pgt.s2_mmu.vmid,
                             found is not None, recycled)
    return Outcome.DONE


def at_context(world: World, profile: AtProfile) -> AtContext:
    """Return the AT emulation's context: the VM's own stage 2 and vCPU 0's shadow."""
    nk = _nk(world)
    kw = world.part(KvmWorld)
    kvm = kw.kvm
    canonical = ShadowS2(kvm.vtcr, kvm_get_vttbr(kvm.pgt.pgd or 0, kvm.pgt.s2_mmu.vmid,
                                                 kvm.env.g))
    mmu = current_mmu(nk, kw.vcpus[0])
    shadow = None if mmu is None else ShadowS2(kvm.vtcr, kvm_get_vttbr(
        mmu.pgt.pgd or 0, mmu.pgt.s2_mmu.vmid, kvm.env.g))
    return AtContext(nk.vm, profile, canonical, shadow)


def run_at(world: World, ev: L1At, draft: StepDraft) -> Outcome:
    """Emulate an AT L1 executes (kvm_at: fast path, then the slow path when KVM does),
    with the at.c of the scenario's kernel release ([kvm] profile)."""
    release = world.scenario.profile
    if release.at is None:
        raise ev.error("do", f"kernel profile {release.name} has no AT emulation (at.c's "
                             "software walker is read in v6.12): use [kvm] profile = \"v6.12\" "
                             "or later")
    nk = _nk(world)
    undefined = kvm_at_undefined(nk.vm, ev.op)
    if undefined:
        draft.result = AtUndefined(ev.op, undefined)
        return Outcome.DONE
    at = replace(release.at, pan_check=ev.pan_check)
    got = kvm_at(at_context(world, at), world.part(NestedWorld).regs, ev.pan, ev.op, ev.va)
    draft.result = AtDone(ev.op, ev.va, got.par, got.path, got.fast_par)
    return Outcome.DONE


def run_unmap(world: World, ev: L1Unmap, draft: StepDraft) -> Outcome:
    """Zero L1's leaf for l2_ipa in guest memory (a scenario error if L1 maps nothing)."""
    nw = world.part(NestedWorld)
    nk = _nk(world)
    steps: list[Any] = []
    got = kvm_walk_nested_s2(nk.vm, nw.regs, ev.l2_ipa, trace=steps)
    if isinstance(got, NestedWalkError) or got.esr or not steps:
        raise ev.error("l2_ipa", f"L1's stage 2 maps nothing at L2 IPA {ev.l2_ipa:#x}")
    leaf = steps[-1]
    assert nw.mem is not None
    nw.mem.write64(leaf.descaddress, 0)
    nw.stale.append((ev.l2_ipa & ~(got.block_size - 1), got.block_size))
    draft.result = L1Unmapped(ev.l2_ipa, leaf.descaddress, leaf.level)
    return Outcome.DONE


def run_map(world: World, ev: L1MapEvent, draft: StepDraft) -> Outcome:
    """Write one more mapping into L1's stage 2 (the builder that wrote [[nested.map]])."""
    b = world.part(NestedWorld).builder
    assert b is not None
    m = ev.map
    try:
        b.map(m.l2_ipa, m.ipa, m.size, s2_attrs(s2ap=m.s2ap, xn=m.xn), level=m.level)
    except (ValueError, InputError) as e:
        raise ev.error("l2_ipa", str(e)) from None
    draft.result = L1Mapped(m)
    return Outcome.DONE


# -- parsing events ----------------------------------------------------------------------------


def _config(it: Item, ctx: ParseContext) -> NestedConfig:
    config = ctx.configs.get("nested")
    if config is None:
        raise it.error("do", f"{it.get('do')} needs a [nested] table (the guest hypervisor)")
    assert isinstance(config, NestedConfig)
    return config


def _need(it: Item, *keys: str) -> None:
    for k in keys:
        if k not in it.fields:
            raise it.error("do", f"{it.get('do')} needs {k!r}")


def _int_field(it: Item, key: str) -> int:
    v = it.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise it.error(key, f"must be an integer, not {shorten(v)}")
    if not 0 <= v < 1 << 64:
        raise it.error(key, f"{v} does not fit in 64 bits")
    return v


def parse_l2_access(it: Item, ctx: ParseContext) -> L2Access:
    """Parse l2_read / l2_write / l2_exec."""
    _config(it, ctx)
    if ("va" in it.fields) == ("ipa" in it.fields):
        raise it.error("do", f"{it.get('do')} needs exactly one of 'ipa' (L2's MMU off) and "
                             "'va' (through L2's stage 1)")
    access = L2_ACCESSES[str(it.get("do"))]
    if "va" in it.fields:
        return L2Access(**common_fields(it), access=access, va=_int_field(it, "va"))
    ipa = _int_field(it, "ipa")
    if ipa >> 48:
        raise it.error("ipa", f"L2 IPA {ipa:#x} is beyond 48 bits")
    return L2Access(**common_fields(it), access=access, ipa=ipa)


TTL_GRANULE_SIZES = {"4K": 1 << 12, "16K": 1 << 14, "64K": 1 << 16}


def _choice(it: Item, key: str, allowed: dict[str, Any] | set[str], default: str) -> str:
    v = it.get(key, default)
    if not isinstance(v, str) or v not in allowed:
        raise it.error(key, f"must be one of {', '.join(sorted(allowed))}, not {shorten(v)}")
    return v


def tlbi_xt(it: Item, op: TlbiOp, config: NestedConfig) -> int:
    """Return the TLBI's Xt: given raw (xt), or encoded from ipa and the hint fields."""
    fields = {"ipa", "ttl_level", "ttl_granule", "tg", "scale", "num"} & set(it.fields)
    if "xt" in it.fields:
        if fields:
            raise it.error(sorted(fields)[0], "give either xt or the fields it encodes, not both")
        return _int_field(it, "xt")
    allowed = ({"ipa", "tg", "scale", "num", "ttl_level"} if op.is_range else
               {"ipa", "ttl_level", "ttl_granule"} if op.by_ipa else set())
    for k in sorted(fields - allowed):
        raise it.error(k, f"not a field of TLBI {op.value} (it takes: "
                          f"{', '.join(sorted(allowed)) or 'no operand'})")
    if not op.is_range and not op.by_ipa:
        return 0
    _need(it, "ipa")
    ipa = _int_field(it, "ipa")
    try:
        if op.is_range:
            tg = TTL_GRANULE_SIZES[_choice(it, "tg", TTL_GRANULE_SIZES, "4K")]
            return encode_range_xt(ipa, tg, _int_field(it, "scale") if "scale" in it.fields
                                   else 0, _int_field(it, "num") if "num" in it.fields else 0,
                                   _int_field(it, "ttl_level") if "ttl_level" in it.fields
                                   else 0)
        if "ttl_level" not in it.fields:
            return encode_ipas2_xt(ipa)
        own = {Granule.G4K: "4K", Granule.G16K: "16K", Granule.G64K: "64K"}[config.granule]
        gran = TTL_GRANULE_SIZES[_choice(it, "ttl_granule", TTL_GRANULE_SIZES, own)]
        return encode_ipas2_xt(ipa, gran, _int_field(it, "ttl_level"))
    except ValueError as e:
        key = "ipa" if "base" in str(e) else ("ttl_level" if "TTL level" in str(e)
                                              else "scale" if "SCALE" in str(e) else "ipa")
        raise it.error(key, str(e)) from None


def parse_tlbi(it: Item, ctx: ParseContext) -> L1Tlbi:
    """Parse l1_tlbi: op, then xt or the fields that encode it."""
    config = _config(it, ctx)
    _need(it, "op")
    op = TlbiOp(_choice(it, "op", {o.value for o in TlbiOp}, ""))
    return L1Tlbi(**common_fields(it), op=op, xt=tlbi_xt(it, op, config))


def parse_at(it: Item, ctx: ParseContext) -> L1At:
    """Parse l1_at: op (any AT), va, pan, pan_check ("architecture" or "el0-probe")."""
    _config(it, ctx)
    _need(it, "op", "va")
    op = AtOp[_choice(it, "op", {o.name for o in AtOp}, "")]
    pan = it.get("pan", False)
    if not isinstance(pan, bool):
        raise it.error("pan", f"must be true or false, not {shorten(pan)}")
    check = PanCheck(_choice(it, "pan_check", {c.value for c in PanCheck},
                             PanCheck.ARCHITECTURE.value))
    return L1At(**common_fields(it), op=op, va=_int_field(it, "va"), pan=pan, pan_check=check)


def parse_unmap(it: Item, ctx: ParseContext) -> L1Unmap:
    """Parse l1_unmap."""
    _config(it, ctx)
    _need(it, "l2_ipa")
    return L1Unmap(**common_fields(it), l2_ipa=_int_field(it, "l2_ipa"))


def parse_enter(it: Item, ctx: ParseContext) -> L2Enter:
    """Parse l2_enter: regs = { VTTBR_EL2 = ..., ... } by Arm name."""
    _config(it, ctx)
    _need(it, "regs")
    raw = it.get("regs")
    if not isinstance(raw, dict) or not raw:
        raise it.error("regs", f"must be a table like {{ VTTBR_EL2 = 0x6000043000000 }}, "
                               f"not {shorten(raw)}")
    out = []
    for k, v in raw.items():
        if k not in SysRegs.names():
            raise it.error("regs", f"{shorten(k)}: not a register the model has")
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 64:
            raise it.error("regs", f"{k}: must be a 64-bit value, not {shorten(v)}")
        out.append((str(k), v))
    return L2Enter(**common_fields(it), regs=tuple(out))


def parse_map(it: Item, ctx: ParseContext) -> L1MapEvent:
    """Parse l1_map (the fields of a [[nested.map]] table)."""
    config = _config(it, ctx)
    _need(it, "l2_ipa", "ipa", "size")
    perms = _choice(it, "perms", S2AP, "RW")
    level = _int_field(it, "level") if "level" in it.fields else None
    if level is not None and not 1 <= level <= 3:
        raise it.error("level", f"must be 1..3, not {level}")
    xn = it.get("xn", False)
    if not isinstance(xn, bool):
        raise it.error("xn", f"must be true or false, not {shorten(xn)}")
    m = L1Map(_int_field(it, "l2_ipa"), _int_field(it, "ipa"), _int_field(it, "size"),
              S2AP[perms], 0b10 if xn else 0, level, f"event[{it.index}]")
    step = config.granule.block_size(3 if level is None else level)
    for k in ("l2_ipa", "ipa", "size"):
        if getattr(m, k) % step or m.size == 0:
            raise it.error(k, f"{getattr(m, k):#x} is not a non-zero multiple of {step:#x}")
    return L1MapEvent(**common_fields(it), map=m)


# -- expectations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectEsr(Expectation):
    """expect_esr: the ESR injected into L1 by the step's last fault (None: none)."""

    esr: int | None


@dataclass(frozen=True)
class ShadowLeaf:
    """A shadow stage-2 leaf as expect_shadow names it: its size, R/W/X and the host PA of
    its base (perms and pa None: not compared)."""

    size: int | None
    perms: str | None
    pa: int | None = None


@dataclass(frozen=True)
class ExpectShadow(Expectation):
    """expect_shadow: the leaf of vCPU 0's shadow stage 2 at l2_ipa after the step."""

    l2_ipa: int
    leaf: ShadowLeaf


@dataclass(frozen=True)
class ExpectPar(Expectation):
    """expect_par: the PAR_EL1 value an AT leaves."""

    par: int


@dataclass(frozen=True)
class ExpectPath(Expectation):
    """expect_path: which path of the AT emulation gave PAR_EL1 ("fast", "slow")."""

    path: str


SHADOW_SIZES = {"4K": 1 << 12, "2M": 1 << 21, "1G": 1 << 30, "none": None}


def _expect_esr(it: Item) -> ExpectEsr:
    v = it.get("expect_esr")
    if v == "none":
        return ExpectEsr(None)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 64:
        raise it.error("expect_esr", f"must be an ESR value or \"none\", not {shorten(v)}")
    return ExpectEsr(v)


def _expect_shadow(it: Item) -> ExpectShadow:
    v = it.get("expect_shadow")
    usage = ("must be a table like { l2_ipa = 0x80000000, size = \"2M\", perms = \"RW\", "
             "pa = 0x1000200000 }")
    if not isinstance(v, dict) or "l2_ipa" not in v or set(v) - {"l2_ipa", "size", "perms",
                                                                   "pa"}:
        raise it.error("expect_shadow", f"{usage}, not {shorten(v)}")
    ipa = v["l2_ipa"]
    if isinstance(ipa, bool) or not isinstance(ipa, int) or not 0 <= ipa < 1 << 48:
        raise it.error("expect_shadow", f"l2_ipa: must be an L2 IPA below 2^48, not "
                                        f"{shorten(ipa)}")
    size = v.get("size", "4K")
    if size not in SHADOW_SIZES:
        raise it.error("expect_shadow", f"size: must be one of 4K, 2M, 1G, none, not "
                                        f"{shorten(size)}")
    perms = v.get("perms")
    if perms is not None and (not isinstance(perms, str) or perms.strip("RWX") or
                              len(set(perms)) != len(perms)):
        raise it.error("expect_shadow", f"perms: must be letters of \"RWX\", not {shorten(perms)}")
    pa = v.get("pa")
    if pa is not None and (isinstance(pa, bool) or not isinstance(pa, int) or
                           not 0 <= pa < 1 << 52):
        raise it.error("expect_shadow", f"pa: must be a host PA below 2^52, not {shorten(pa)}")
    return ExpectShadow(ipa, ShadowLeaf(SHADOW_SIZES[size], perms, pa))


def _expect_par(it: Item) -> ExpectPar:
    v = it.get("expect_par")
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 64:
        raise it.error("expect_par", f"must be a PAR_EL1 value, not {shorten(v)}")
    return ExpectPar(v)


def _expect_path(it: Item) -> ExpectPath:
    v = it.get("expect_path")
    if v not in ("fast", "slow"):
        raise it.error("expect_path", f"must be \"fast\" or \"slow\", not {shorten(v)}")
    return ExpectPath(str(v))


def check_esr(world: World, e: ExpectEsr, d: StepDraft) -> Mismatch | None:
    """Compare the ESR injected into L1."""
    esrs = [f.handled.result.esr for f in d.faults if isinstance(f.handled.result,
                                                                 InjectedS2Fault)]
    got = esrs[-1] if esrs else None
    return None if got == e.esr else Mismatch(e, got)


def prot_letters(pte: int) -> str:
    """Return a shadow leaf's permissions as R, W, X letters."""
    p = int(kvm_pgtable_stage2_pte_prot(pte))
    x = p & int(KVM_PGTABLE_PROT_PX | KVM_PGTABLE_PROT_UX)
    return ("R" if p & int(KVM_PGTABLE_PROT_R) else "") + \
        ("W" if p & int(KVM_PGTABLE_PROT_W) else "") + ("X" if x else "")


def shadow_leaf(world: World, l2_ipa: int) -> ShadowLeaf:
    """Return the leaf vCPU 0's shadow holds at l2_ipa (size None: no valid leaf)."""
    nk = _nk(world)
    mmu = current_mmu(nk, world.part(KvmWorld).vcpus[0])
    if mmu is None or not kvm_s2_mmu_valid(mmu):
        return ShadowLeaf(None, None)
    leaf = kvm_pgtable_get_leaf(mmu.pgt, l2_ipa)
    if leaf.ret or not kvm_pte_valid(leaf.pte):
        return ShadowLeaf(None, None)
    g = world.part(KvmWorld).kvm.env.g
    return ShadowLeaf(kvm_granule_size(leaf.level, g), prot_letters(leaf.pte),
                      kvm_pte_to_phys(leaf.pte, g))


def check_shadow(world: World, e: ExpectShadow, d: StepDraft) -> Mismatch | None:
    """Compare the shadow leaf at the L2 IPA (perms only when the expectation names them)."""
    got = shadow_leaf(world, e.l2_ipa)
    want = e.leaf
    if got.size == want.size and (want.perms is None or got.perms == want.perms) and \
            (want.pa is None or got.pa == want.pa):
        return None
    return Mismatch(e, got)


def check_par(world: World, e: ExpectPar, d: StepDraft) -> Mismatch | None:
    """Compare PAR_EL1."""
    got = d.result.par if isinstance(d.result, AtDone) else None
    return None if got == e.par else Mismatch(e, got)


def check_path(world: World, e: ExpectPath, d: StepDraft) -> Mismatch | None:
    """Compare the AT emulation's path."""
    got = d.result.path if isinstance(d.result, AtDone) else None
    return None if got == e.path else Mismatch(e, got)


# -- invariants and summary ---------------------------------------------------------------------


def shadow_invariant(world: World) -> list[NestedViolation]:
    """No shadow leaf grants more than L1's stage 2 and KVM's together, each maps what
    their composition maps (s2mmu.nested.invariants)."""
    nw = world.part(NestedWorld)
    if nw.nk is None:
        return []
    return [v for v in check_nested_invariants(nw.nk, nw.regs)
            if not any(a <= v.l2_ipa < a + n for a, n in nw.stale)]


@dataclass(frozen=True)
class ShadowSummary:
    """One shadow stage 2 at the end of a run: its key's VMID and its leaves."""

    vmid: int
    stage2_enabled: bool
    leaves: int


@dataclass(frozen=True)
class NestedSummary:
    """The shadow pool at the end of a run (valid shadows only)."""

    shadows: tuple[ShadowSummary, ...]
    pool: int


def summarize_nested(world: World) -> NestedSummary | None:
    """Return the valid shadows and their leaf counts (None without [nested])."""
    nk = world.part(NestedWorld).nk
    if nk is None:
        return None
    from s2mmu.nested.invariants import shadow_leaves
    return NestedSummary(tuple(ShadowSummary(m.tlb_vttbr >> 48 & 0xFFFF,
                                             m.nested_stage2_enabled,
                                             len(shadow_leaves(m.pgt)))
                               for m in nk.mmus if kvm_s2_mmu_valid(m)), len(nk.mmus))


# -- registration --------------------------------------------------------------------------------


def register() -> None:
    """Register the nested layer: table, world, events, expectations, invariant."""
    REGISTRY.layer(Layer("nested", frozenset({"nested"}), parse_nested, build_nested,
                         ready_nested, summary=summarize_nested))
    shadow = frozenset({"expect_shadow"})
    for name in L2_ACCESSES:
        REGISTRY.event_kind(EventKind(name, L2Access, frozenset({"ipa", "va"}),
                                      parse_l2_access,
                                      run_l2_access,
                                      frozenset({"expect", "expect_mapping", "expect_esr"})
                                      | shadow))
    REGISTRY.event_kind(EventKind("l1_tlbi", L1Tlbi,
                                  frozenset({"op", "xt", "ipa", "ttl_level", "ttl_granule",
                                             "tg", "scale", "num"}),
                                  parse_tlbi, run_tlbi, shadow))
    REGISTRY.event_kind(EventKind("l1_at", L1At, frozenset({"op", "va", "pan", "pan_check"}),
                                  parse_at, run_at, frozenset({"expect_par", "expect_path"})))
    REGISTRY.event_kind(EventKind("l1_unmap", L1Unmap, frozenset({"l2_ipa"}), parse_unmap,
                                  run_unmap, shadow))
    REGISTRY.event_kind(EventKind("l2_enter", L2Enter, frozenset({"regs"}), parse_enter,
                                  run_enter, shadow))
    REGISTRY.event_kind(EventKind("l1_map", L1MapEvent,
                                  frozenset({"l2_ipa", "ipa", "size", "perms", "xn", "level"}),
                                  parse_map, run_map, shadow))
    for key, typ, parse, check in (
            ("expect_esr", ExpectEsr, _expect_esr, check_esr),
            ("expect_shadow", ExpectShadow, _expect_shadow, check_shadow),
            ("expect_par", ExpectPar, _expect_par, check_par),
            ("expect_path", ExpectPath, _expect_path, check_path)):
        REGISTRY.expectation(ExpectationKind(key, typ, parse, check))
    REGISTRY.invariant(Invariant("nested-shadow", shadow_invariant))


register()
