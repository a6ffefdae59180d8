"""bench/bench_nested.py: its --json document follows s2mmu.bench-nested/1 (no timing
asserted: the figures are only shown to be positive rates of the paths they name)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from s2mmu.cli.schemas import validate

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_nested.py"


def load_bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_nested", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_json_is_one_document_of_its_schema(capsys: pytest.CaptureFixture[str]) -> None:
    load_bench().main(["--json", "--seconds", "0.001"])
    doc = json.loads(capsys.readouterr().out)
    validate(doc)
    assert doc["schema"] == "s2mmu.bench-nested/1" and doc["pages"] == 512
    assert set(doc["per_second"]) == {"kvm_walk_nested_s2", "at_s1e1r_fast", "at_s1e1r_slow",
                                      "at_s12e1r_fast", "at_s12e1r_slow"}


def test_text_prints_one_line_per_figure(capsys: pytest.CaptureFixture[str]) -> None:
    load_bench().main(["--seconds", "0.001"])
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split(":")[0] for ln in lines] == [
        "kvm_walk_nested_s2 (3 levels)", "AT S1E1R, fast path (shadow S2)",
        "AT S1E1R, slow path (software walk)", "AT S12E1R, fast stage 1 + S2 walk",
        "AT S12E1R, slow stage 1 + S2 walk"]
    assert all(ln.endswith(" /s") for ln in lines)
