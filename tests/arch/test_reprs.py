"""Hex reprs of the records users see; equality and hashing untouched."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import pytest

from s2mmu.arch.access import acc_gpr
from s2mmu.arch.faults import Fault, FaultRecord
from s2mmu.arch.memory import MemoryWrite
from s2mmu.arch.reprs import hex_repr, hex_value


def test_ints_are_hex_bools_and_negatives_are_not() -> None:
    assert hex_value(4096) == "0x1000"
    assert hex_value(True) == "True"
    assert hex_value(-1) == "-1"
    assert hex_value((1, 16)) == "(0x1, 0x10)"
    assert hex_value((16,)) == "(0x10,)"


def test_decimal_fields_stay_decimal() -> None:
    @hex_repr(decimal=("level",))
    @dataclass(frozen=True)
    class Hit:
        pa: int
        level: int

    assert repr(Hit(0x90003000, 3)) == "Hit(pa=0x90003000, level=3)"


def test_frozen_records_keep_equality_and_hash() -> None:
    w = MemoryWrite(0x60003028, 0x90003303, 0x90003703)
    assert repr(w) == ("MemoryWrite(pa=0x60003028, before=0x90003303, after=0x90003703, "
                       "big_endian=False)")
    assert w == MemoryWrite(0x60003028, 0x90003303, 0x90003703)
    assert len({w, MemoryWrite(0x60003028, 0x90003303, 0x90003703)}) == 1


def test_fault_record_shows_level_in_decimal_and_addresses_in_hex() -> None:
    f = FaultRecord(Fault.TRANSLATION, -1, acc_gpr(1, False), vaddress=0x8040206000)
    assert "level=-1" in repr(f) and "vaddress=0x8040206000" in repr(f)
    assert "el=1" in repr(f)


def test_only_records_can_be_decorated() -> None:
    class Plain:
        pass

    with pytest.raises(TypeError, match="hex_repr needs a dataclass or a NamedTuple"):
        hex_repr()(Plain)


def test_named_tuple_declared_in_a_test_works() -> None:
    @hex_repr()
    class Pair(NamedTuple):
        a: int
        b: str

    assert repr(Pair(255, "x")) == "Pair(a=0xff, b='x')"
