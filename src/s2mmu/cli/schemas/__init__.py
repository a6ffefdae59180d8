"""JSON Schemas of every document the command line prints with --json.

Each document carries {"schema": "s2mmu.NAME/VERSION"}; its schema is the file
``s2mmu.NAME.VERSION.json`` in this folder (JSON Schema draft 2020-12). Tests validate real
output against these files with the ``jsonschema`` library (:func:`validate`).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def schema_file(name: str) -> str:
    """Return the file name of a document schema: "s2mmu.run/2" -> "s2mmu.run.2.json"."""
    base, _, version = name.partition("/")
    return f"{base}.{version}.json"


def load_schema(name: str) -> dict[str, Any]:
    """Return the JSON Schema for a document named like "s2mmu.run/2"."""
    text = resources.files(__name__).joinpath(schema_file(name)).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def known_schemas() -> list[str]:
    """Return the names of every schema shipped, like "s2mmu.run/2"."""
    out = []
    for entry in resources.files(__name__).iterdir():
        n = entry.name
        if n.startswith("s2mmu.") and n.endswith(".json"):
            stem = n[: -len(".json")]
            base, _, version = stem.rpartition(".")
            out.append(f"{base}/{version}")
    return sorted(out)


def validate(doc: Any) -> None:
    """Validate a document against the schema its "schema" field names.

    Raises jsonschema.ValidationError (or KeyError for a document without a schema name).
    jsonschema is a test dependency: only tests and `s2mmu` developers call this.
    """
    import jsonschema
    from referencing import Registry, Resource

    # A schema may $ref another shipped schema by its $id ("urn:s2mmu:s2mmu.run/2").
    resources = [(sch["$id"], Resource.from_contents(sch))
                 for sch in map(load_schema, known_schemas()) if "$id" in sch]
    schema = load_schema(doc["schema"])
    cls = jsonschema.validators.validator_for(schema)
    cls(schema, registry=Registry().with_resources(resources)).validate(doc)
