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
EVENT_KEYS = {"do", "note", "vcpu", "va", "ipa", "syndrome", "race", "hva", "size", "slot",
              "gpa", "flags", "first_page", "num_pages", "pages", "esr", "far", "hpfar",
              "expect", "expect_mapping", "expect_errno", "expect_error", "expect_dirty",
              "expect_dirty_count", "expect_leaves", "expect_seq", "start", "kind", "mem_type",
              "pa", "thp", "allow_any_uncached", "name", "writable", "mte_allowed"}
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

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


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
        if isinstance(v, bool):
            raise self.fail(table, index, key, "must be an integer or a size like \"2M\"")
        if isinstance(v, int):
            if v < 0:
                raise self.fail(table, index, key, "must not be negative")
            return v
        if isinstance(v, str):
            m = re.fullmatch(r"(\d+)\s*([KMGT])i?B?", v.strip())
            if m:
                return int(m.group(1)) << SIZES[m.group(2)]
        raise self.fail(table, index, key, f"must be an integer or a size like \"2M\", not {v!r}")

    def choice(self, table: str, index: int | None, key: str, v: Any, allowed: set[str]) -> str:
        if v not in allowed:
            raise self.fail(table, index, key, f"must be one of {', '.join(sorted(allowed))}, "
                                               f"not {v!r}")
        return str(v)

    def boolean(self, table: str, index: int | None, key: str, v: Any) -> bool:
        if not isinstance(v, bool):
            raise self.fail(table, index, key, f"must be true or false, not {v!r}")
        return v


INT_KEYS = {"start", "size", "pa", "gpa", "hva", "va", "ipa", "stage1_tables", "first_page",
            "num_pages", "esr", "far", "hpfar", "id", "vcpu", "slot", "pa_bits", "ipa_bits",
            "eager_split_chunk", "expect_dirty_count", "expect_seq", "hugetlb"}
BOOL_KEYS = {"thp", "allow_any_uncached", "mte_allowed", "writable", "ro", "xn", "device",
             "mte", "manual_dirty_log_protect", "initially_set", "nisv_to_user",
             "ras_claims_sea"}


def _check_values(c: Checker, table: str, index: int | None, d: dict[str, Any]) -> dict[str, Any]:
    out = dict(d)
    for k, v in d.items():
        if k in INT_KEYS:
            out[k] = c.size(table, index, k, v)
        elif k in BOOL_KEYS:
            out[k] = c.boolean(table, index, k, v)
    return out


def _items(c: Checker, data: dict[str, Any], table: str, allowed: set[str]) -> list[Item]:
    raw = data.get(table, [])
    if not isinstance(raw, list):
        raise c.fail(table, None, None, f"use [[{table}]] (an array of tables)")
    out = []
    for i, d in enumerate(raw):
        c.keys(table, i, d, allowed)
        out.append(Item(table, i, _check_values(c, table, i, d),
                        Where(c.path, locate(c.text, table, i, None))))
    return out


def _check_vma(c: Checker, it: Item) -> None:
    for k in ("start", "size"):
        if k not in it.fields:
            raise c.fail("vma", it.index, None, f"missing field {k!r}")
    c.choice("vma", it.index, "kind", it.get("kind", "anon"), {"anon", "hugetlb", "file", "pfnmap"})
    c.choice("vma", it.index, "mem_type", it.get("mem_type", "normal"),
             {"normal", "normal-nc", "device"})
    if it.get("kind") == "hugetlb":
        if c.size("vma", it.index, "hugetlb", it.get("hugetlb", "2M")) not in (1 << 21, 1 << 30):
            raise c.fail("vma", it.index, "hugetlb", "must be \"2M\" or \"1G\"")
    if it.get("kind") == "pfnmap" and "pa" not in it.fields:
        raise c.fail("vma", it.index, None, "a pfnmap VMA needs 'pa' (the BAR's address)")


def _check_event(c: Checker, it: Item) -> None:
    if "do" not in it.fields:
        raise c.fail("event", it.index, None, "missing field 'do'")
    do = c.choice("event", it.index, "do", it.get("do"), EVENT_KINDS)
    if do in ACCESS and ("va" in it.fields) == ("ipa" in it.fields):
        raise c.fail("event", it.index, "do", "a guest access needs exactly one of va, ipa")
    if "expect" in it.fields:
        c.choice("event", it.index, "expect", it.get("expect"), EXPECTS)
    if "syndrome" in it.fields:
        s = it.get("syndrome")
        if not (isinstance(s, list) and len(s) == 2 and s[0] in (1, 2, 4, 8)
                and isinstance(s[1], int) and 0 <= s[1] < 32):
            raise c.fail("event", it.index, "syndrome", "must be [size in bytes 1/2/4/8, "
                                                       "register 0-31]")
    if "race" in it.fields:
        r = it.get("race")
        if not (isinstance(r, dict) and r.get("do") in HOST_EVENTS and "hva" in r):
            raise c.fail("event", it.index, "race", "must be {do = munmap|madvise|migrate|"
                                                   "hwpoison, hva = ..., size = ...}")
    if do in HOST_EVENTS and "hva" not in it.fields:
        raise c.fail("event", it.index, "do", f"{do} needs 'hva'")
    if do == "mmap":
        _check_vma(c, Item("event", it.index, {**it.fields, "kind": it.get("kind", "anon")},
                           it.where))
    if do == "abort" and not {"esr", "far", "hpfar"} <= set(it.fields):
        raise c.fail("event", it.index, "do", "abort needs esr, far and hpfar")


def load_scenario(path: str | Path, text: str | None = None) -> Scenario:
    """Read and check a scenario; raise ScenarioError naming file, line and field."""
    p = str(path)
    if text is None:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ScenarioError(f"{p}: cannot read: {e.strerror}") from None
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
    host = _check_values(c, "host", None, c.keys("host", None, data.get("host", {}), HOST_KEYS))
    for f in host.get("features", []):
        c.choice("host", None, "features", f, HOST_FEATURES)
    vm = _check_values(c, "vm", None, c.keys("vm", None, data.get("vm", {}), VM_KEYS))
    vmas = _items(c, data, "vma", VMA_KEYS)
    for it in vmas:
        _check_vma(c, it)
    slots = _items(c, data, "memslot", SLOT_KEYS)
    for it in slots:
        for k in ("id", "gpa", "size", "hva"):
            if k not in it.fields:
                raise c.fail("memslot", it.index, None, f"missing field {k!r}")
        for f in it.get("flags", []):
            c.choice("memslot", it.index, "flags", f, {"log_dirty_pages", "readonly"})
    vcpus = _items(c, data, "vcpu", VCPU_KEYS)
    for it in vcpus:
        for j, m in enumerate(it.get("map", [])):
            c.keys("vcpu.map", j, m, MAP_KEYS)
            for k in ("va", "ipa", "size"):
                if k not in m:
                    raise c.fail("vcpu", it.index, "map", f"map entry {j} misses {k!r}")
    events = _items(c, data, "event", EVENT_KEYS)
    for it in events:
        _check_event(c, it)
    return Scenario(p, str(data.get("name", Path(p).stem)), str(data.get("description", "")),
                    host, vm, tuple(vmas), tuple(slots), tuple(vcpus), tuple(events))
