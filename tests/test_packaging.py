"""A non-editable install carries every data file the package reads."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_data_file_under_the_package_is_in_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["s2mmu"]
    package = ROOT / "src" / "s2mmu"
    missing = [str(p.relative_to(package)) for p in package.rglob("*")
               if p.is_file() and p.suffix not in (".py", ".pyc")
               and "__pycache__" not in p.parts
               and not any(fnmatch.fnmatch(p.name, pat.split("/")[-1]) for pat in patterns)]
    assert missing == []
