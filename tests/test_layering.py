"""Imports point only downwards: arch <- pgtable <- kvm, pkvm <- nested <- scenario <- cli."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "s2mmu"
RANK = {"arch": 0, "pgtable": 1, "kvm": 2, "pkvm": 2, "nested": 3, "conformance": 4,
        "scenario": 4, "cli": 5}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Return (line, module) for every absolute import in path."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def violations() -> list[str]:
    bad = []
    for f in sorted(SRC.rglob("*.py")):
        parts = f.relative_to(SRC).parts
        if len(parts) < 2 or parts[0] not in RANK:
            continue
        here = parts[0]
        for line, mod in imports_of(f):
            p = mod.split(".")
            if len(p) < 2 or p[0] != "s2mmu" or p[1] not in RANK:
                continue
            if RANK[p[1]] > RANK[here] or (RANK[p[1]] == RANK[here] and p[1] != here):
                bad.append(f"{f.relative_to(SRC)}:{line}: {here} imports {mod}")
    return bad


def test_imports_point_only_downwards() -> None:
    assert violations() == []


def test_every_layer_is_ranked() -> None:
    layers = {p.name for p in SRC.iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert layers <= set(RANK), layers - set(RANK)


def test_arch_knows_no_kvm_word() -> None:
    words = ("kvm", "memslot", "pkvm", "vcpu")
    hits = [f"{f.name}:{i}" for f in (SRC / "arch").rglob("*.py")
            for i, line in enumerate(f.read_text().lower().splitlines(), 1)
            if any(w in line for w in words)]
    assert hits == []
