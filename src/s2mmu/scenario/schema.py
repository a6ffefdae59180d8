"""Scenario files: TOML in, checked values out, or one error naming file, line and field.

TOML because Python 3.11 reads it with the standard library (tomllib: no dependency),
it allows comments, and hex integers (0x4000_0000) are native, which addresses need.
tomllib does not report where a value came from, so :func:`locate` finds the line of a
field from its path ([[event]] number 3, key "ipa") by scanning the text.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s2mmu.arch.errors import InputError

SIZES = {"K": 10, "M": 20, "G": 30, "T": 40}

TOP = {"name", "description", "host", "vm", "vma", "memslot", "vcpu", "event"}
HOST_KEYS = {"features", "pa_bits", "ras_claims_sea"}
HOST_FEATURES = {"fwb", "dic", "idc", "tlb_range", "mte"}
VM_KEYS = {"ipa_bits", "mte", "manual_dirty_log_protect", "initially_set",
           "eager_split_chunk", "nisv_to_user"}
VMA_KEYS = {"name", "start", "size", "kind", "thp", "hugetlb", "mem_type",
            "allow_any_uncached", "mte_allowed", "writable", "pa"}
SLOT_KEYS = {"id", "gpa", "size", "hva", "flags", "expect_error"}
VCPU_KEYS = {"id", "stage1_tables", "map"}
MAP_KEYS = {"va", "ipa", "size", "ro", "xn", "device"}
ACCESS = {"read", "write", "exec", "dc"}
HOST_EVENTS = {"munmap", "madvise", "migrate", "hwpoison"}
EVENT_KINDS = ACCESS | HOST_EVENTS | {"mmap",
    "dirty_log_enable", "dirty_log_disable", "get_dirty_log", "clear_dirty_log",
    "memslot", "delete_memslot", "move_memslot", "abort", "check"}
COMMON_EVENT_KEYS = {"do", "note", "expect_error", "expect_leaves", "expect_seq"}
FAULT_EXPECTS = {"expect", "expect_mapping", "expect_errno"}
EVENT_KIND_KEYS: dict[str, set[str]] = {
    **{k: {"vcpu", "va", "ipa", "syndrome", "race"} | FAULT_EXPECTS for k in ACCESS},
    "abort": {"vcpu", "esr", "far", "hpfar"} | FAULT_EXPECTS,
    **{k: {"hva", "size", "expect_errno"} for k in HOST_EVENTS},
    "mmap": VMA_KEYS,
    "dirty_log_enable": {"slot"}, "dirty_log_disable": {"slot"},
    "get_dirty_log": {"slot", "expect_dirty", "expect_dirty_count"},
    "clear_dirty_log": {"slot", "first_page", "num_pages", "pages"},
    "memslot": {"slot", "gpa", "size", "hva", "flags"},
    "move_memslot": {"slot", "gpa"}, "delete_memslot": {"slot"}, "check": set(),
}
EVENT_KEYS = COMMON_EVENT_KEYS.union(*EVENT_KIND_KEYS.values())
RACE_KEYS = {"do", "hva", "size"}
MAPPING_SIZES = {"4K", "2M", "1G"}
EXPECTS = {"completed", "guest-fault", "resumed", "mmio", "nisv", "sea-dabt", "sea-pabt",
           "size-fault", "serror", "hwpoison", "error", "retry"}


class ScenarioError(InputError):
    """A malformed scenario: the message names the file, the line and the field."""


@dataclass(frozen=True)
class Where:
    """Where a value came from, for messages."""

    path: str
    line: int


@dataclass(frozen=True)
class Item:
    """One table of the scenario ([[vma]], [[event]], ...) with its checked fields."""

    kind: str
    index: int
    fields: dict[str, Any]
    where: Where
    key_lines: dict[str, int] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def error(self, key: str | None, msg: str) -> ScenarioError:
        """Return the error for one of this item's fields, found while running it."""
        line = self.key_lines.get(key, self.where.line) if key else self.where.line
        name = f"{self.kind}[{self.index}]" + (f".{key}" if key else "")
        return ScenarioError(f"{self.where.path}:{line}: {name}: {msg}")


@dataclass(frozen=True)
class Scenario:
    """A whole scenario, checked."""

    path: str
    name: str
    description: str
    host: dict[str, Any]
    vm: dict[str, Any]
    vmas: tuple[Item, ...]
    memslots: tuple[Item, ...]
    vcpus: tuple[Item, ...]
    events: tuple[Item, ...] = field(default=())
    vm_lines: dict[str, int] = field(default_factory=dict)


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


class Checker:
    """Field checks that raise ScenarioError with file, line and field."""

    def __init__(self, path: str, text: str) -> None:
        self.path, self.text = path, text

    def fail(self, table: str, index: int | None, key: str | None, msg: str) -> ScenarioError:
        line = locate(self.text, table, index, key)
        name = f"{table}[{index}]" if index is not None else table
        fieldname = f"{name}.{key}" if key else name
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
            m = re.fullmatch(r"(\d+)\s*([KMGT])i?B?", v.strip())
            if m:
                v = int(m.group(1)) << SIZES[m.group(2)]
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(table, index, key,
                            f"must be an integer or a size like \"2M\", not {v!r}")
        if v < 0:
            raise self.fail(table, index, key, "must not be negative")
        if v >> 64:
            raise self.fail(table, index, key, f"{v:#x} does not fit in 64 bits")
        return v

    def choice(self, table: str, index: int | None, key: str, v: Any, allowed: set[str]) -> str:
        if not isinstance(v, str) or v not in allowed:
            raise self.fail(table, index, key, f"must be one of {', '.join(sorted(allowed))}, "
                                               f"not {v!r}")
        return str(v)

    def boolean(self, table: str, index: int | None, key: str, v: Any) -> bool:
        if not isinstance(v, bool):
            raise self.fail(table, index, key, f"must be true or false, not {v!r}")
        return v

    def string(self, table: str, index: int | None, key: str, v: Any) -> str:
        if not isinstance(v, str):
            raise self.fail(table, index, key, f"must be a string, not {v!r}")
        return v

    def choices(self, table: str, index: int | None, key: str, v: Any,
                allowed: set[str]) -> list[str]:
        if not isinstance(v, list):
            raise self.fail(table, index, key, f"must be a list like [\"{min(allowed)}\"], "
                                               f"not {v!r}")
        return [self.choice(table, index, key, x, allowed) for x in v]

    def ints(self, table: str, index: int | None, key: str, v: Any) -> list[int]:
        if not isinstance(v, list):
            raise self.fail(table, index, key, f"must be a list of integers, not {v!r}")
        return [self.size(table, index, key, x) for x in v]

    def aligned(self, table: str, index: int | None, key: str, v: int, align: int) -> None:
        if v % align:
            raise self.fail(table, index, key, f"{v:#x} is not a multiple of {align:#x}")


INT_KEYS = {"start", "size", "pa", "gpa", "hva", "va", "ipa", "stage1_tables", "first_page",
            "num_pages", "esr", "far", "hpfar", "id", "vcpu", "slot", "pa_bits", "ipa_bits",
            "eager_split_chunk", "expect_dirty_count", "expect_seq", "hugetlb"}
BOOL_KEYS = {"thp", "allow_any_uncached", "mte_allowed", "writable", "ro", "xn", "device",
             "mte", "manual_dirty_log_protect", "initially_set", "nisv_to_user",
             "ras_claims_sea"}
STR_KEYS = {"name", "description", "note", "expect_errno", "expect_error", "kind", "mem_type"}
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
                                                    f"not {v!r}")
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
        lines = {k: locate(c.text, table, i, k) for k in d}
        out.append(Item(table, i, _check_values(c, table, i, d),
                        Where(c.path, locate(c.text, table, i, None)), lines))
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
                                              f"not {maps!r}")
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
        raise fail(f"must be a table {{va, ipa, size}}, not {m!r}")
    for k in m:
        if k not in MAP_KEYS:
            raise fail(f"unknown field {k!r} (known: {', '.join(sorted(MAP_KEYS))})")
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


def _check_event(c: Checker, it: Item, nvcpus: int) -> None:
    if "do" not in it.fields:
        raise c.fail("event", it.index, None, "missing field 'do'")
    do = c.choice("event", it.index, "do", it.get("do"), EVENT_KINDS)
    allowed = COMMON_EVENT_KEYS | EVENT_KIND_KEYS[do]
    for k in it.fields:
        if k not in allowed:
            raise c.fail("event", it.index, k, f"not a field of a {do} event (known: "
                                               f"{', '.join(sorted(allowed))})")
    if do in ACCESS and ("va" in it.fields) == ("ipa" in it.fields):
        raise c.fail("event", it.index, "do", "a guest access needs exactly one of va, ipa")
    if it.get("vcpu", 0) >= nvcpus:
        raise c.fail("event", it.index, "vcpu", f"no vCPU {it.get('vcpu')} ({nvcpus} defined)")
    if "expect" in it.fields:
        c.choice("event", it.index, "expect", it.get("expect"), EXPECTS)
    if "syndrome" in it.fields:
        s = it.get("syndrome")
        if not (isinstance(s, list) and len(s) == 2 and not any(isinstance(x, bool) for x in s)
                and s[0] in (1, 2, 4, 8) and isinstance(s[1], int) and 0 <= s[1] < 32):
            raise c.fail("event", it.index, "syndrome", "must be [size in bytes 1/2/4/8, "
                                                       "register 0-31]")
    if "race" in it.fields:
        it.fields["race"] = _check_race(c, it.index, it.get("race"))
    if do in HOST_EVENTS and "hva" not in it.fields:
        raise c.fail("event", it.index, "do", f"{do} needs 'hva'")
    if do == "mmap":
        _check_vma(c, it, "event")
    if do == "abort" and not {"esr", "far", "hpfar"} <= set(it.fields):
        raise c.fail("event", it.index, "do", "abort needs esr, far and hpfar")
    if do == "abort" and (it.get("esr") >> 26) & 0x3F not in (0x20, 0x24):
        ec = (it.get("esr") >> 26) & 0x3F
        raise c.fail("event", it.index, "esr", f"ESR_EL2.EC={ec:#x} is not an Instruction or "
                     "Data Abort from a lower EL (0x20, 0x24): kvm_handle_guest_abort "
                     "handles only those")
    if "flags" in it.fields:
        c.choices("event", it.index, "flags", it.get("flags"), SLOT_FLAGS)
    if "pages" in it.fields:
        first = it.get("first_page", 0)
        end = first + it.get("num_pages", 1 << 64)
        for p in it.get("pages"):
            if not first <= p < end:
                raise c.fail("event", it.index, "pages", f"page {p} is outside first_page.."
                                                         "first_page+num_pages")


def _check_race(c: Checker, index: int, r: Any) -> dict[str, Any]:
    usage = "must be {do = munmap|madvise|migrate|hwpoison, hva = ..., size = ...}"
    if not isinstance(r, dict) or r.get("do") not in HOST_EVENTS or "hva" not in r \
            or set(r) - RACE_KEYS:
        raise c.fail("event", index, "race", usage)
    return {"do": r["do"], "hva": c.size("event", index, "race", r["hva"]),
            "size": c.size("event", index, "race", r.get("size", PAGE))}


SLOT_FLAGS = {"log_dirty_pages", "readonly"}


def _check_top(c: Checker, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    for k in ("name", "description"):
        if k in data:
            if not isinstance(data[k], str):
                raise ScenarioError(f"{c.path}:{_top_line(c.text, k)}: {k}: must be a string, "
                                    f"not {data[k]!r}")
    host = _check_values(c, "host", None, c.keys("host", None, data.get("host", {}), HOST_KEYS))
    c.choices("host", None, "features", host.get("features", []), HOST_FEATURES)
    if host.get("pa_bits", 48) not in PARANGE_BITS:
        raise c.fail("host", None, "pa_bits", f"must be one of "
                                              f"{', '.join(map(str, sorted(PARANGE_BITS)))}")
    vm = _check_values(c, "vm", None, c.keys("vm", None, data.get("vm", {}), VM_KEYS))
    if vm.get("eager_split_chunk", 0) not in CHUNK_SIZES:
        raise c.fail("vm", None, "eager_split_chunk", "must be 0, \"4K\", \"2M\" or \"1G\" "
                                                      "(kvm_is_block_size_supported)")
    return host, vm


def _top_line(text: str, key: str) -> int:
    for i, line in enumerate(text.splitlines()):
        if re.match(r"^\s*" + re.escape(key) + r"\s*=", line):
            return i + 1
    return 1


def load_scenario(path: str | Path, text: str | None = None) -> Scenario:
    """Read and check a scenario; raise ScenarioError naming file, line and field."""
    p = str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ScenarioError(f"{p}: cannot read: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise ScenarioError(f"{p}: not UTF-8 text (byte {e.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise ScenarioError(f"{p}:{m.group(1) if m else 1}: not valid TOML: {e}") from None
    c = Checker(p, text)
    for k in data:
        if k not in TOP:
            raise ScenarioError(f"{p}:{locate(text, k, None, None)}: {k}: unknown table "
                                f"(known: {', '.join(sorted(TOP))})")
    host, vm = _check_top(c, data)
    vmas = _items(c, data, "vma", VMA_KEYS)
    _check_vmas(c, vmas)
    slots = _items(c, data, "memslot", SLOT_KEYS)
    for it in slots:
        for k in ("id", "gpa", "size", "hva"):
            if k not in it.fields:
                raise c.fail("memslot", it.index, None, f"missing field {k!r}")
        c.choices("memslot", it.index, "flags", it.get("flags", []), SLOT_FLAGS)
    vcpus = _items(c, data, "vcpu", VCPU_KEYS)
    for it in vcpus:
        _check_vcpu(c, it)
    events = _items(c, data, "event", EVENT_KEYS)
    for it in events:
        _check_event(c, it, max(1, len(vcpus)))
    return Scenario(p, str(data.get("name", Path(p).stem)), str(data.get("description", "")),
                    host, vm, tuple(vmas), tuple(slots), tuple(vcpus), tuple(events),
                    {k: locate(text, "vm", None, k) for k in vm})
