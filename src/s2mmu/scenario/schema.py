"""Scenario files: TOML in, typed values out, or one error naming file, line and field.

TOML because Python 3.11 reads it with the standard library (tomllib: no dependency),
it allows comments, and hex integers (0x4000_0000) are native, which addresses need.
tomllib does not report where a value came from, so :func:`locate` finds the line of a
field from its path ([[event]] number 3, key "ipa") by scanning the text.

A scenario is data for the layers below: each layer registers (in a scenario-level module
of its own, such as :mod:`s2mmu.scenario.kvm_events`) the top-level tables it owns and
the world state it builds from them (a :class:`Layer`), its event kinds (an
:class:`EventKind`: name, frozen dataclass type, parse, run), its expectations
(:class:`ExpectationKind`) and its invariants (:class:`Invariant`). Loading parses each
``[[event]]`` table into its kind's frozen dataclass, checked field by field with the
same ``file:line: field: why`` messages; the runner dispatches through the same registry.

``[kvm] profile = "v6.12"`` names the kernel release whose rules every layer follows
(:mod:`s2mmu.nested.profile`); it is the scenario's, not one layer's, so the loader reads
it and the layers find it as ``world.scenario.profile``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from s2mmu.arch.errors import InputError
from s2mmu.arch.features import ID_FEATURES
from s2mmu.arch.inputs import (
    escape,
    loads_toml,
    range_beyond,
    read_text,
    shorten,
    shorten_hex,
    size_of_text,
)
from s2mmu.kvm.host import HOST_FLAG_FEATURES, host_usable_pa_bits
from s2mmu.nested.profile import CURRENT as CURRENT_PROFILE
from s2mmu.nested.profile import KERNEL_PROFILES, KernelProfile
from s2mmu.pgtable.inject import InjectedBug

if TYPE_CHECKING:
    from s2mmu.scenario.records import Mismatch, Outcome, StepDraft, World

SIZES = {"K": 10, "M": 20, "G": 30, "T": 40}

KVM_TABLES = {"host", "vm", "vma", "memslot", "vcpu"}
HOST_KEYS = {"features", "pa_bits", "ras_claims_sea", "kvm_mode", "thp_zero_page"}
KVM_MODES = {"default", "protected"}
"""kvm-arm.mode: the default (VHE or nVHE: the same stage-2 code) or protected (pKVM)."""
HOST_FEATURES = {"fwb", "dic", "idc", "tlb_range", "mte"} | set(ID_FEATURES - HOST_FLAG_FEATURES)
"""[host] features: the host flags, and further FEAT_* of the host CPU's ID registers."""
VM_KEYS = {"ipa_bits", "mte", "manual_dirty_log_protect", "initially_set",
           "eager_split_chunk", "nisv_to_user", "inject", "protected", "id_regs"}
VMA_KEYS = {"name", "start", "size", "kind", "thp", "hugetlb", "mem_type",
            "allow_any_uncached", "mte_allowed", "writable", "pa"}
SLOT_KEYS = {"id", "gpa", "size", "hva", "flags", "expect_error"}
VCPU_KEYS = {"id", "stage1_tables", "map", "tlb"}
MAP_KEYS = {"va", "ipa", "size", "ro", "xn", "device"}
ACCESS = {"read", "write", "exec", "dc"}
HOST_EVENTS = {"munmap", "madvise", "migrate", "hwpoison"}
COMMON_EVENT_KEYS = {"do", "note", "expect_error", "expect_leaves", "expect_seq", "expect_warn",
                     "expect_broken"}
RACE_KEYS = {"do", "hva", "size", "at"}
RACE_POINTS = {"before-lock", "before-seq"}
KVM_KEYS = {"profile"}
MAPPING_SIZES = {"4K", "2M", "1G"}
EXPECTS = {"completed", "guest-fault", "resumed", "mmio", "nisv", "sea-dabt", "sea-pabt",
           "size-fault", "serror", "hwpoison", "error", "retry", "l1-s2-fault"}




class ScenarioError(InputError):
    """A malformed scenario: the message names the file, the line and the field."""


@dataclass(frozen=True)
class Where:
    """Where a value came from, for messages."""

    path: str
    line: int


@dataclass(frozen=True)
class Item:
    """One raw table of the scenario ([[vma]], [[event]], ...) with its checked fields:
    what a parse function reads to build its typed value."""

    kind: str
    index: int
    fields: dict[str, Any]
    where: Where
    key_lines: dict[str, int] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def error(self, key: str | None, msg: str) -> ScenarioError:
        """Return the error for one of this table's fields."""
        line = self.key_lines.get(key, self.where.line) if key else self.where.line
        name = f"{self.kind}[{self.index}]" + (f".{key}" if key else "")
        return ScenarioError(f"{self.where.path}:{line}: {name}: {msg}")


# -- the typed scenario -----------------------------------------------------------------------


class Expectation:
    """Base of every expectation: a frozen dataclass of its kind, checked after its step."""


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every timeline event: where it came from, its note and its expectations.

    Each kind is a frozen dataclass deriving from this one, with typed fields (sizes and
    addresses as ints). ``do`` is the name the scenario file used (read, write, ...).
    """

    do: str
    table: str
    index: int
    where: Where
    key_lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)
    note: str = ""
    expects: tuple[Expectation, ...] = ()

    def error(self, key: str | None, msg: str) -> ScenarioError:
        """Return the error for one of this event's fields, found while running it."""
        line = self.key_lines.get(key, self.where.line) if key else self.where.line
        name = f"{self.table}[{self.index}]" + (f".{key}" if key else "")
        return ScenarioError(f"{self.where.path}:{line}: {name}: {msg}")


@dataclass(frozen=True)
class Scenario:
    """A whole scenario, checked: each layer's configuration, the setup steps the layers
    derive from their tables (memslots), then the timeline, and the kernel release."""

    path: str
    name: str
    description: str
    configs: Mapping[str, object]
    setup: tuple[Event, ...] = ()
    events: tuple[Event, ...] = ()
    profile: KernelProfile = CURRENT_PROFILE
    """The kernel release whose rules every layer follows ([kvm] profile)."""

    def config(self, layer: str) -> Any:
        """Return one layer's configuration (the value its Layer.parse returned)."""
        return self.configs[layer]


# -- the registry: what each layer plugs in -------------------------------------------------


@dataclass(frozen=True)
class EventKind:
    """One event kind: its name in the file, its type, its fields, how to parse and run it.

    keys: the fields it takes besides do/note and the common expectations; expects: the
    expectation fields it accepts (registered ExpectationKind keys); parse(item, scenario
    context) returns the event; run(world, event, draft) runs it and returns the outcome
    and the step's typed result.
    """

    name: str
    type: type[Event]
    keys: frozenset[str]
    parse: Callable[[Item, ParseContext], Event]
    run: Callable[[World, Any, StepDraft], Outcome]
    expects: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ExpectationKind:
    """One expectation field: its key, its value's type; parse(item) gives the value,
    check(world, expectation, draft) gives a Mismatch or None."""

    key: str
    type: type[Expectation]
    parse: Callable[[Item], Expectation]
    check: Callable[[World, Any, StepDraft], Mismatch | None]


@dataclass(frozen=True)
class Invariant:
    """A rule checked after every step: check(world) returns the ways it is broken (typed
    values, worded by the renderers)."""

    name: str
    check: Callable[[World], list[Any]]


@dataclass(frozen=True)
class Layer:
    """A layer's world state: the top-level tables it owns, how to parse them into its
    configuration (and setup events), how to build its part of the world, and hooks around
    each step.

    parse(checker, data, context) -> (config, setup events); build(world, config) adds the
    layer's state before setup; ready(world, config) finishes it after the setup events ran;
    mark(world) and observe(world, mark) collect what happened during a step (events shown,
    trace); after(world, draft) updates the layer's history after a step; summary(world)
    returns the layer's summary of the run (None: nothing to say, left out of the run).
    """

    name: str
    tables: frozenset[str]
    parse: Callable[[Checker, dict[str, Any], ParseContext], tuple[object, list[Event]]]
    build: Callable[[World, Any], None]
    ready: Callable[[World, Any], None] = lambda world, config: None
    mark: Callable[[World], object] = lambda world: None
    observe: Callable[[World, Any, StepDraft, bool], None] = lambda w, m, d, t: None
    after: Callable[[World, StepDraft], None] = lambda world, draft: None
    summary: Callable[[World], object] | None = None


@dataclass
class Registry:
    """Every registered layer, event kind, expectation and invariant, in registration order."""

    layers: dict[str, Layer] = field(default_factory=dict)
    kinds: dict[str, EventKind] = field(default_factory=dict)
    expectations: dict[str, ExpectationKind] = field(default_factory=dict)
    invariants: dict[str, Invariant] = field(default_factory=dict)

    def event_kind(self, kind: EventKind) -> None:
        """Register an event kind (a name registered twice is a bug)."""
        assert kind.name not in self.kinds, kind.name
        self.kinds[kind.name] = kind

    def expectation(self, kind: ExpectationKind) -> None:
        """Register an expectation field."""
        assert kind.key not in self.expectations, kind.key
        self.expectations[kind.key] = kind

    def invariant(self, inv: Invariant) -> None:
        """Register an invariant."""
        assert inv.name not in self.invariants, inv.name
        self.invariants[inv.name] = inv

    def layer(self, layer: Layer) -> None:
        """Register a layer's world state."""
        assert layer.name not in self.layers, layer.name
        self.layers[layer.name] = layer

    def kind_of(self, event: Event) -> EventKind:
        """Return the registered kind of an event."""
        return self.kinds[event.do]

    def expectation_of(self, e: Expectation) -> ExpectationKind:
        """Return the registered kind of an expectation value."""
        return next(k for k in self.expectations.values() if type(e) is k.type)


REGISTRY = Registry()
"""The registry the runner dispatches through."""


@dataclass(frozen=True)
class ExpectBroken(Expectation):
    """expect_broken: the step breaks this registered invariant (a scenario that means to
    show a bug: the invariant's report for this step is then expected, not a failure)."""

    invariant: str


def _expect_broken(it: Item) -> ExpectBroken:
    name = it.get("expect_broken")
    if name not in REGISTRY.invariants:
        raise it.error("expect_broken", f"{shorten(name)} is not an invariant (known: "
                                        f"{', '.join(sorted(REGISTRY.invariants))})")
    return ExpectBroken(name)


def check_broken(world: World, e: ExpectBroken, d: StepDraft) -> Mismatch | None:
    """Check that the step broke the invariant named (got: the invariants it broke)."""
    from s2mmu.scenario.records import Mismatch
    got = tuple(sorted({b.invariant for b in d.broken}))
    return None if e.invariant in got else Mismatch(e, got)


REGISTRY.expectation(ExpectationKind("expect_broken", ExpectBroken, _expect_broken,
                                     check_broken))

LAYER_MODULES = ("s2mmu.scenario.kvm_events", "s2mmu.scenario.pkvm_events",
                 "s2mmu.scenario.nested_events")
"""The scenario-level modules that register each layer (nested and pKVM add theirs)."""


def load_layers() -> Registry:
    """Import every layer's registering module (once) and return the registry."""
    for name in LAYER_MODULES:
        importlib.import_module(name)
    return REGISTRY


@dataclass(frozen=True)
class ParseContext:
    """What a parse function may need of the rest of the file: the layers' configs so far,
    and the file's checker (for the shared field checks and their messages)."""

    configs: Mapping[str, object]
    checker: Checker


def locate(text: str, table: str, index: int | None, key: str | None) -> int:
    """Return the 1-based line of key in the index-th [[table]] (or [table]); 1 if unknown."""
    lines = text.splitlines()
    header = re.compile(r"^\s*\[\[\s*" + re.escape(table) + r"\s*\]\]" if index is not None
                        else r"^\s*\[\s*" + re.escape(table) + r"\s*\]")
    count, start = -1, None
    for i, line in enumerate(lines):
        if header.match(line):
            count += 1
            if index is None or count == index:
                start = i
                break
    if start is None:
        return 1
    if key is None:
        return start + 1
    keypat = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
    for j in range(start + 1, len(lines)):
        if re.match(r"^\s*\[", lines[j]) and not lines[j].strip().startswith("[[" + table + "."):
            break
        if keypat.match(lines[j]):
            return j + 1
    return start + 1


MAX_NAME_CHARS = 64
"""A table or key name longer than this is shortened in messages."""


def field_name(name: str) -> str:
    """Return a table or key name as messages show it: escaped, and shortened if long."""
    name = escape(name)
    if len(name) <= MAX_NAME_CHARS:
        return name
    return f"{name[:16]}...{name[-8:]} ({len(name)} characters)"


class Checker:
    """Field checks that raise ScenarioError with file, line and field."""

    def __init__(self, path: str, text: str) -> None:
        self.path, self.text = path, text
        self.pa_bits = 48  # [host] pa_bits, once checked
        self._lines: list[str] | None = None
        self._headers: dict[tuple[str, bool], list[int]] = {}

    def line(self, table: str, index: int | None, key: str | None) -> int:
        """Return what :func:`locate` returns, with the file's table headers found once
        (a scenario of thousands of events stays linear to load)."""
        if self._lines is None:
            self._lines = self.text.splitlines()
        lines = self._lines
        array = index is not None
        if (table, array) not in self._headers:
            header = re.compile(r"^\s*\[\[\s*" + re.escape(table) + r"\s*\]\]" if array
                                else r"^\s*\[\s*" + re.escape(table) + r"\s*\]")
            self._headers[table, array] = [i for i, ln in enumerate(lines) if header.match(ln)]
        starts = self._headers[table, array]
        n = index or 0
        if n >= len(starts):
            return 1
        start = starts[n]
        if key is None:
            return start + 1
        keypat = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        sub = "[[" + table + "."
        for j in range(start + 1, len(lines)):
            if re.match(r"^\s*\[", lines[j]) and not lines[j].strip().startswith(sub):
                break
            if keypat.match(lines[j]):
                return j + 1
        return start + 1

    def fail(self, table: str, index: int | None, key: str | None, msg: str) -> ScenarioError:
        line = self.line(table, index, key)
        name = f"{field_name(table)}[{index}]" if index is not None else field_name(table)
        fieldname = f"{name}.{field_name(key)}" if key else name
        return ScenarioError(f"{self.path}:{line}: {fieldname}: {msg}")

    def keys(self, table: str, index: int | None, d: Any, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(d, dict):
            raise self.fail(table, index, None, "must be a table")
        for k in d:
            if k not in allowed:
                known = ", ".join(sorted(allowed))
                raise self.fail(table, index, k, f"unknown field (known: {known})")
        return d

    def size(self, table: str, index: int | None, key: str, v: Any) -> int:
        if isinstance(v, str):
            try:
                n = size_of_text(v)
            except InputError as e:
                raise self.fail(table, index, key, str(e)) from None
            v = v if n is None else n
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(table, index, key,
                            f"must be an integer or a size like \"2M\", not {shorten(v)}")
        if v < 0:
            raise self.fail(table, index, key, "must not be negative")
        if v >> 64:
            raise self.fail(table, index, key, f"{shorten_hex(v)} does not fit in 64 bits")
        return v

    def choice(self, table: str, index: int | None, key: str, v: Any, allowed: set[str]) -> str:
        if not isinstance(v, str) or v not in allowed:
            raise self.fail(table, index, key, f"must be one of {', '.join(sorted(allowed))}, "
                                               f"not {shorten(v)}")
        return str(v)

    def boolean(self, table: str, index: int | None, key: str, v: Any) -> bool:
        if not isinstance(v, bool):
            raise self.fail(table, index, key, f"must be true or false, not {shorten(v)}")
        return v

    def string(self, table: str, index: int | None, key: str, v: Any) -> str:
        if not isinstance(v, str):
            raise self.fail(table, index, key, f"must be a string, not {shorten(v)}")
        return v

    def choices(self, table: str, index: int | None, key: str, v: Any,
                allowed: set[str]) -> list[str]:
        if not isinstance(v, list):
            raise self.fail(table, index, key, f"must be a list like [\"{min(allowed)}\"], "
                                               f"not {shorten(v)}")
        return [self.choice(table, index, key, x, allowed) for x in v]

    def ints(self, table: str, index: int | None, key: str, v: Any) -> list[int]:
        if not isinstance(v, list):
            raise self.fail(table, index, key, f"must be a list of integers, not {shorten(v)}")
        return [self.size(table, index, key, x) for x in v]

    def aligned(self, table: str, index: int | None, key: str, v: int, align: int) -> None:
        if v % align:
            raise self.fail(table, index, key, f"{v:#x} is not a multiple of {align:#x}")


INT_KEYS = {"start", "size", "pa", "gpa", "hva", "va", "ipa", "stage1_tables", "first_page",
            "num_pages", "esr", "far", "hpfar", "id", "vcpu", "slot", "pa_bits", "ipa_bits",
            "eager_split_chunk", "expect_dirty_count", "expect_seq", "hugetlb",
            "expect_marked_dirty"}
BOOL_KEYS = {"thp", "allow_any_uncached", "mte_allowed", "writable", "ro", "xn", "device",
             "mte", "manual_dirty_log_protect", "initially_set", "nisv_to_user",
             "ras_claims_sea", "tlb", "protected", "thp_zero_page"}
STR_KEYS = {"name", "description", "note", "expect_errno", "expect_error", "kind", "mem_type",
            "expect_warn", "expect_broken"}
PARANGE_BITS = {32, 36, 40, 42, 44, 48, 52}
CHUNK_SIZES = {0, 1 << 12, 1 << 21, 1 << 30}
STAGE1_VA_BITS = 39
PAGE = 1 << 12


def _check_values(c: Checker, table: str, index: int | None, d: dict[str, Any]) -> dict[str, Any]:
    out = dict(d)
    for k, v in d.items():
        if k in INT_KEYS:
            out[k] = c.size(table, index, k, v)
        elif k in BOOL_KEYS:
            out[k] = c.boolean(table, index, k, v)
        elif k in STR_KEYS:
            out[k] = c.string(table, index, k, v)
        elif k in ("expect_dirty", "pages"):
            out[k] = c.ints(table, index, k, v)
        elif k == "expect_mapping":
            out[k] = c.choice(table, index, k, v, MAPPING_SIZES | {"none"})
        elif k == "expect_leaves":
            out[k] = _leaves(c, table, index, v)
    return out


def _leaves(c: Checker, table: str, index: int | None, v: Any) -> dict[str, int]:
    if not isinstance(v, dict):
        raise c.fail(table, index, "expect_leaves", f"must be a table like {{ \"2M\" = 1 }}, "
                                                    f"not {shorten(v)}")
    for size, n in v.items():
        c.choice(table, index, "expect_leaves", size, MAPPING_SIZES)
        c.size(table, index, "expect_leaves", n)
    return dict(v)


def _items(c: Checker, data: dict[str, Any], table: str, allowed: set[str]) -> list[Item]:
    raw = data.get(table, [])
    if not isinstance(raw, list):
        raise c.fail(table, None, None, f"use [[{table}]] (an array of tables)")
    out = []
    for i, d in enumerate(raw):
        c.keys(table, i, d, allowed)
        lines = {k: c.line(table, i, k) for k in d}
        out.append(Item(table, i, _check_values(c, table, i, d),
                        Where(c.path, c.line(table, i, None)), lines))
    return out


def _check_vma(c: Checker, it: Item, table: str = "vma") -> None:
    for k in ("start", "size"):
        if k not in it.fields:
            raise c.fail(table, it.index, None, f"missing field {k!r}")
    kind = c.choice(table, it.index, "kind", it.get("kind", "anon"),
                    {"anon", "hugetlb", "file", "pfnmap"})
    c.choice(table, it.index, "mem_type", it.get("mem_type", "normal"),
             {"normal", "normal-nc", "device"})
    align = PAGE
    if kind == "hugetlb":
        align = c.size(table, it.index, "hugetlb", it.get("hugetlb", "2M"))
        if align not in (1 << 21, 1 << 30):
            raise c.fail(table, it.index, "hugetlb", "must be \"2M\" or \"1G\"")
    for k in ("start", "size"):
        c.aligned(table, it.index, k, it.get(k), align)
    if it.get("size") == 0:
        raise c.fail(table, it.index, "size", "must not be 0")
    if it.get("start") + it.get("size") > 1 << 64:
        raise c.fail(table, it.index, "size", "the VMA ends beyond the 64-bit address space")
    if kind == "pfnmap":
        if "pa" not in it.fields:
            raise c.fail(table, it.index, None, "a pfnmap VMA needs 'pa' (the BAR's address)")
        c.aligned(table, it.index, "pa", it.get("pa"), PAGE)
        usable = host_usable_pa_bits(c.pa_bits)
        if range_beyond(it.get("pa"), it.get("size"), usable):
            where = f"{shorten_hex(it.get('pa'))}+{it.get('size'):#x} ends beyond the host's"
            if usable == c.pa_bits:
                raise c.fail(table, it.index, "pa",
                             f"{where} {c.pa_bits}-bit PA space ([host] pa_bits)")
            raise c.fail(table, it.index, "pa",
                         f"{where} usable {usable}-bit PA space ([host] pa_bits = {c.pa_bits}, "
                         "but 4K pages without FEAT_LPA2 map at most 48 bits)")


def _check_vmas(c: Checker, vmas: list[Item]) -> None:
    placed: list[Item] = []
    for it in vmas:
        _check_vma(c, it)
        start, end = it.get("start"), it.get("start") + it.get("size")
        for other in placed:
            if other.get("start") < end and start < other.get("start") + other.get("size"):
                raise c.fail("vma", it.index, "start", f"overlaps vma[{other.index}]")
        placed.append(it)


def _check_vcpu(c: Checker, it: Item) -> None:
    if it.get("id", it.index) != it.index:
        raise c.fail("vcpu", it.index, "id", f"vCPU ids are 0, 1, ... in order: expected "
                                             f"{it.index}")
    if "stage1_tables" in it.fields:
        c.aligned("vcpu", it.index, "stage1_tables", it.get("stage1_tables"), PAGE)
    maps = it.get("map", [])
    if not isinstance(maps, list):
        raise c.fail("vcpu", it.index, "map", f"must be a list of {{va, ipa, size}} tables, "
                                              f"not {shorten(maps)}")
    if maps and "stage1_tables" not in it.fields:
        raise c.fail("vcpu", it.index, "map", "needs stage1_tables (where the tables live)")
    checked = []
    for j, m in enumerate(maps):
        checked.append(_check_map(c, it.index, j, m))
    it.fields["map"] = checked


def _check_map(c: Checker, vcpu: int, j: int, m: Any) -> dict[str, Any]:
    def fail(msg: str) -> ScenarioError:
        return c.fail("vcpu", vcpu, "map", f"map[{j}]: {msg}")

    if not isinstance(m, dict):
        raise fail(f"must be a table {{va, ipa, size}}, not {shorten(m)}")
    for k in m:
        if k not in MAP_KEYS:
            raise fail(f"unknown field {shorten(k)} (known: {', '.join(sorted(MAP_KEYS))})")
    for k in ("va", "ipa", "size"):
        if k not in m:
            raise fail(f"missing field {k!r}")
    out = dict(m)
    for k, v in m.items():
        try:
            out[k] = c.size("vcpu", vcpu, "map", v) if k in INT_KEYS else \
                c.boolean("vcpu", vcpu, "map", v)
        except ScenarioError as e:
            raise fail(f"{k}: {str(e).split(': ', 2)[-1]}") from None
        if k in INT_KEYS and out[k] % PAGE:
            raise fail(f"{k} {out[k]:#x} is not 4K aligned")
    if out["size"] == 0 or out["va"] + out["size"] > 1 << STAGE1_VA_BITS:
        raise fail(f"va..va+size must be a non-empty range below 2^{STAGE1_VA_BITS} "
                   f"(the vCPU's TTBR0 stage 1)")
    if out["ipa"] + out["size"] > 1 << 48:
        raise fail("ipa..ipa+size must lie below 2^48")
    return out


def _check_race(c: Checker, index: int, r: Any) -> dict[str, Any]:
    usage = ("must be {do = munmap|madvise|migrate|hwpoison, hva = ..., size = ..., "
             "at = before-lock|before-seq}")
    if not isinstance(r, dict) or r.get("do") not in HOST_EVENTS or "hva" not in r \
            or set(r) - RACE_KEYS or r.get("at", "before-lock") not in RACE_POINTS:
        raise c.fail("event", index, "race", usage)
    return {"do": r["do"], "hva": c.size("event", index, "race", r["hva"]),
            "size": c.size("event", index, "race", r.get("size", PAGE)),
            "at": r.get("at", "before-lock")}


SLOT_FLAGS = {"log_dirty_pages", "readonly"}
U32_KEYS = {"slot", "num_pages", "id"}


def _check_top(c: Checker, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    host = _check_values(c, "host", None, c.keys("host", None, data.get("host", {}), HOST_KEYS))
    c.choices("host", None, "features", host.get("features", []), HOST_FEATURES)
    c.choice("host", None, "kvm_mode", host.get("kvm_mode", "default"), KVM_MODES)
    if host.get("pa_bits", 48) not in PARANGE_BITS:
        raise c.fail("host", None, "pa_bits", f"must be one of "
                                              f"{', '.join(map(str, sorted(PARANGE_BITS)))}")
    vm = _check_values(c, "vm", None, c.keys("vm", None, data.get("vm", {}), VM_KEYS))
    c.choices("vm", None, "inject", vm.get("inject", []), {b.value for b in InjectedBug})
    if vm.get("eager_split_chunk", 0) not in CHUNK_SIZES:
        raise c.fail("vm", None, "eager_split_chunk", "must be 0, \"4K\", \"2M\" or \"1G\" "
                                                      "(kvm_is_block_size_supported)")
    return host, vm


def _top_line(text: str, key: str) -> int:
    for i, line in enumerate(text.splitlines()):
        if re.match(r"^\s*" + re.escape(key) + r"\s*=", line):
            return i + 1
    return 1


def _read(path: str | Path, text: str | None) -> tuple[str, str, dict[str, Any]]:
    p = escape(str(path))
    try:  # s2mmu.arch.inputs: size, UTF-8, depth and digits before tomllib, string lengths
        text = read_text(path, p) if text is None else text
        data = loads_toml(text, p)
    except InputError as e:
        raise ScenarioError(str(e)) from None
    return p, text, data


def common_fields(it: Item, do: str | None = None) -> dict[str, Any]:
    """Return the fields every event shares (do, where, note, expectations), for a kind's
    parse function to pass on to its dataclass."""
    exps = tuple(REGISTRY.expectations[k].parse(it) for k in it.fields
                 if k in REGISTRY.expectations)
    return {"do": do or str(it.get("do")), "table": it.kind, "index": it.index,
            "where": it.where, "key_lines": it.key_lines, "note": str(it.get("note", "")),
            "expects": exps}


def _parse_events(c: Checker, data: dict[str, Any], ctx: ParseContext) -> list[Event]:
    kinds = REGISTRY.kinds
    every = COMMON_EVENT_KEYS.union(*(k.keys | k.expects for k in kinds.values()))
    out = []
    for it in _items(c, data, "event", every):
        if "do" not in it.fields:
            raise c.fail("event", it.index, None, "missing field 'do'")
        kind = kinds[c.choice("event", it.index, "do", it.get("do"), set(kinds))]
        allowed = COMMON_EVENT_KEYS | kind.keys | kind.expects
        for k in it.fields:
            if k not in allowed:
                raise c.fail("event", it.index, k, f"not a field of a {kind.name} event (known: "
                                                   f"{', '.join(sorted(allowed))})")
        for k in U32_KEYS & set(it.fields):  # fields the ioctl's struct holds in a __u32
            if it.get(k) >> 32:
                raise c.fail("event", it.index, k, f"{shorten_hex(it.get(k))} does not fit the "
                                                   "ioctl's __u32 field")
        out.append(kind.parse(it, ctx))
    return out


def load_scenario(path: str | Path, text: str | None = None) -> Scenario:
    """Read and check a scenario; raise ScenarioError naming file, line and field."""
    registry = load_layers()
    p, text, data = _read(path, text)
    c = Checker(p, text)
    top = {"name", "description", "event", "kvm"}.union(
        *(la.tables for la in registry.layers.values()))
    for k in data:
        if k not in top:
            raise ScenarioError(f"{p}:{locate(text, k, None, None)}: {field_name(k)}: unknown "
                                f"table (known: {', '.join(sorted(top))})")
    for k in ("name", "description"):
        if k in data and not isinstance(data[k], str):
            raise ScenarioError(f"{c.path}:{_top_line(c.text, k)}: {k}: must be a string, "
                                f"not {shorten(data[k])}")
    profile = check_profile(c, data)
    configs: dict[str, object] = {}
    setup: list[Event] = []
    for layer in registry.layers.values():
        config, steps = layer.parse(c, data, ParseContext(configs, c))
        configs[layer.name] = config
        setup += steps
    events = _parse_events(c, data, ParseContext(configs, c))
    return Scenario(p, str(data.get("name", Path(p).stem)), str(data.get("description", "")),
                    configs, tuple(setup), tuple(events), profile)


def check_profile(c: Checker, data: dict[str, Any]) -> KernelProfile:
    """Return the release [kvm] profile names (the current code when absent)."""
    t = c.keys("kvm", None, data.get("kvm", {}), KVM_KEYS)
    name = t.get("profile", CURRENT_PROFILE.name)
    if not isinstance(name, str) or name not in KERNEL_PROFILES:
        raise c.fail("kvm", None, "profile", f"must be one of {', '.join(KERNEL_PROFILES)}, "
                                             f"not {shorten(name)}")
    return KERNEL_PROFILES[name]


def check_kvm_tables(c: Checker, data: dict[str, Any]) -> tuple[
        dict[str, Any], dict[str, Any], list[Item], list[Item], list[Item]]:
    """Check the kvm layer's tables: [host], [vm], [[vma]], [[memslot]], [[vcpu]].

    Returns (host, vm, vmas, memslots, vcpus) with their fields checked.
    """
    host, vm = _check_top(c, data)
    c.pa_bits = host.get("pa_bits", 48)
    vmas = _items(c, data, "vma", VMA_KEYS)
    _check_vmas(c, vmas)
    slots = _items(c, data, "memslot", SLOT_KEYS)
    for it in slots:
        for k in ("id", "gpa", "size", "hva"):
            if k not in it.fields:
                raise c.fail("memslot", it.index, None, f"missing field {k!r}")
        c.choices("memslot", it.index, "flags", it.get("flags", []), SLOT_FLAGS)
        if it.get("id") >> 32:
            raise c.fail("memslot", it.index, "id", f"{shorten_hex(it.get('id'))} does not fit "
                                                    "the ioctl's __u32 slot field")
    vcpus = _items(c, data, "vcpu", VCPU_KEYS)
    for it in vcpus:
        _check_vcpu(c, it)
    return host, vm, vmas, slots, vcpus
