"""Every Arm rule identifier cited in src/ is listed in docs/rules.md, and vice versa."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RULE = re.compile(r"\b[RI]_[A-Z]{5}\b")


def cited_in_source() -> set[str]:
    """Identifiers in the Python sources (the conformance probe's assembler symbols, such
    as its mailbox magic, are not rule citations)."""
    found: set[str] = set()
    for path in (ROOT / "src").rglob("*.py"):
        found |= set(RULE.findall(path.read_text()))
    return found


def listed_in_docs() -> set[str]:
    rows = set()
    for line in (ROOT / "docs" / "rules.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and cells and RULE.fullmatch(cells[0].strip("`")):
            rows.add(cells[0].strip("`"))
    return rows


def test_every_cited_rule_is_listed():
    missing = cited_in_source() - listed_in_docs()
    assert not missing, f"cited in src/ but not in docs/rules.md: {sorted(missing)}"


def test_every_listed_rule_is_cited():
    unused = listed_in_docs() - cited_in_source()
    assert not unused, f"listed in docs/rules.md but cited nowhere in src/: {sorted(unused)}"


def test_listed_rows_name_the_release():
    for line in (ROOT / "docs" / "rules.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and cells and RULE.fullmatch(cells[0].strip("`")):
            assert len(cells) >= 2 and cells[1], f"{cells[0]}: no Arm ARM release given"
