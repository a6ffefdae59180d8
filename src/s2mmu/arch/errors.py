"""Errors for bad input and API misuse.

Architectural faults are values (see faults.py), never exceptions. An exception from
s2mmu means the caller gave something the model cannot accept (InputError: bad user
input, reported as one line naming the rule and the value) or a model bug.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: a malformed file, a reserved encoding, an out-of-range value.

    The message is one line that names the rule broken and the offending value.
    """
