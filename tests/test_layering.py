"""Imports point only downwards: arch <- pgtable <- kvm, pkvm <- nested <- scenario <- real
<- cli (real: scenarios run on real KVM, s2mmu/real, uses scenario and sits below cli).

The top-level modules (s2mmu/__init__.py, s2mmu/api.py: the one-call entries a notebook
finds as s2mmu.translate and s2mmu.at) sit just above pgtable: they may import arch and
pgtable only, and no layer imports them (a layer that did would import every layer the
API uses, and the API could never use that layer).

The kernel package (s2mmu/kernel: the kernel's own pgtable.c and at.c built and driven
as an oracle) may import every model layer up to nested (it compares pgtable with
pgtable.c and the nested AT emulation with at.c), and only cli imports it: it is a test
instrument, not a layer the model stands on, so no model layer may depend on it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "s2mmu"
RANK = {"arch": 0, "pgtable": 1, "kvm": 2, "pkvm": 2, "nested": 3, "kernel": 4,
        "conformance": 4, "scenario": 4, "real": 5, "cli": 6}
ONLY_IMPORTED_BY = {"kernel": {"kernel", "cli"}}
TOP_RANK = 1  # s2mmu/*.py: may use arch and pgtable


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
        top = len(parts) == 1
        if not top and parts[0] not in RANK:
            continue
        here = "top level" if top else parts[0]
        for line, mod in imports_of(f):
            p = mod.split(".")
            if p[0] != "s2mmu":
                continue
            if len(p) < 2 or p[1] not in RANK:
                if not top:  # `from s2mmu import ...` or s2mmu.api from inside a layer
                    bad.append(f"{f.relative_to(SRC)}:{line}: {here} imports {mod}")
                continue
            if p[1] in ONLY_IMPORTED_BY and here not in ONLY_IMPORTED_BY[p[1]]:
                bad.append(f"{f.relative_to(SRC)}:{line}: {here} imports {mod}")
            elif top:
                if RANK[p[1]] > TOP_RANK:
                    bad.append(f"{f.relative_to(SRC)}:{line}: {here} imports {mod}")
            elif RANK[p[1]] > RANK[here] or (RANK[p[1]] == RANK[here] and p[1] != here):
                bad.append(f"{f.relative_to(SRC)}:{line}: {here} imports {mod}")
    return bad


def test_imports_point_only_downwards() -> None:
    assert violations() == []


def test_top_level_api_uses_only_arch_and_pgtable(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "arch").mkdir()
    (tmp_path / "api.py").write_text("from s2mmu.arch.state import SysRegs\n"
                                     "from s2mmu.kvm.vm import Kvm\n")
    (tmp_path / "arch" / "x.py").write_text("import s2mmu.api\nfrom s2mmu import translate\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    assert violations() == ["api.py:2: top level imports s2mmu.kvm.vm",
                            "arch/x.py:1: arch imports s2mmu.api",
                            "arch/x.py:2: arch imports s2mmu"]


def test_only_cli_imports_the_kernel_oracle(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for layer in ("kernel", "nested", "cli", "scenario"):
        (tmp_path / layer).mkdir()
    (tmp_path / "kernel" / "k.py").write_text("from s2mmu.nested.at import kvm_at\n"
                                               "from s2mmu.scenario.run import run\n")
    (tmp_path / "nested" / "n.py").write_text("from s2mmu.kernel.diff import run_diff\n")
    (tmp_path / "scenario" / "s.py").write_text("import s2mmu.kernel.build\n")
    (tmp_path / "cli" / "c.py").write_text("from s2mmu.kernel.diff import run_diff\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    assert violations() == ["kernel/k.py:2: kernel imports s2mmu.scenario.run",
                            "nested/n.py:1: nested imports s2mmu.kernel.diff",
                            "scenario/s.py:1: scenario imports s2mmu.kernel.build"]


def test_every_layer_is_ranked() -> None:
    layers = {p.name for p in SRC.iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert layers <= set(RANK), layers - set(RANK)


def test_arch_knows_no_kvm_word() -> None:
    words = ("kvm", "memslot", "pkvm", "vcpu")
    hits = [f"{f.name}:{i}" for f in (SRC / "arch").rglob("*.py")
            for i, line in enumerate(f.read_text().lower().splitlines(), 1)
            if any(w in line for w in words)]
    assert hits == []
