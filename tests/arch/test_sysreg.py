"""Register declarations as field tables, and the frozen views they decode to."""

import dataclasses

import pytest

from s2mmu.arch.errors import InputError
from s2mmu.arch.sysreg import Field, RegisterSpec, Res0, Res1

TOY = RegisterSpec("TOY_EL1", (
    Res0(63, 32), Res1(31, 31), Field(15, 14, "TG0", {0: "4KB", 1: "64KB"}),
    Field(5, 0, "T0SZ"), Res0(13, 6),
), width=64)


def test_field_width():
    assert Field(15, 14, "TG0").width == 2
    assert Field(0, 0, "M").width == 1


def test_fields_are_listed_most_significant_first():
    assert [f.name for f in TOY.fields()] == ["TG0", "T0SZ"]


def test_unknown_field_is_a_key_error_naming_register_and_field():
    with pytest.raises(KeyError, match="TOY_EL1 has no field FOO"):
        TOY.field("FOO")


def test_res_masks():
    assert TOY.res1_mask() == 1 << 31
    assert TOY.res0_mask() == (0xFFFF_FFFF << 32) | (0xFF << 6)


def test_encode_sets_res1_and_fields():
    assert TOY.encode(TG0=1, T0SZ=25) == (1 << 31) | (1 << 14) | 25


def test_decode_view_reads_fields_by_name():
    view = TOY.decode((1 << 31) | (1 << 14) | 25)
    assert view.T0SZ == 25
    assert view.TG0 == 1
    assert view.get("T0SZ") == 25


def test_view_keeps_raw_value_and_is_frozen():
    view = TOY.decode(0x8000_4019)
    assert view.value == 0x8000_4019
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.value = 0  # type: ignore[misc]


def test_view_unknown_attribute_is_attribute_error():
    with pytest.raises(AttributeError):
        _ = TOY.decode(0).NOPE


def test_describe_names_encodings():
    rows = TOY.decode(1 << 14).describe()
    assert rows[0] == ("TG0", 15, 14, 1, "64KB")
    assert rows[1] == ("T0SZ", 5, 0, 0, "")


def test_res0_violations_reports_set_res0_bits():
    assert TOY.decode((1 << 40) | (1 << 6)).res0_violations() == (1 << 40) | (1 << 6)
    assert TOY.decode(1 << 31).res0_violations() == 0


def test_decode_rejects_value_wider_than_register():
    with pytest.raises(InputError) as e:
        TOY.decode(1 << 64)
    assert str(e.value) == "TOY_EL1: value 0x10000000000000000 does not fit in 64 bits"


def test_decode_rejects_negative_value():
    with pytest.raises(InputError, match="does not fit in 64 bits"):
        TOY.decode(-1)


GATED = RegisterSpec("GATED_EL1", (
    Res0(63, 12), Field(11, 11, "NSE", feature="FEAT_RME", absent="RES1"),
    Field(10, 0, "LOW"),
))


def test_describe_leaves_out_fields_that_need_a_feature():
    assert [row[0] for row in GATED.decode(0x800).describe()] == ["LOW"]


def test_gated_field_still_reads_by_name():
    assert GATED.decode(0x800).NSE == 1
    assert GATED.field("NSE").absent == "RES1"


def test_items_in_order_lists_reserved_ranges_too():
    assert [type(i).__name__ for i in GATED.items_in_order()] == ["Res0", "Field", "Field"]


def test_encode_refuses_an_unknown_field_and_a_value_wider_than_its_field():
    with pytest.raises(InputError) as e:
        TOY.encode(T1SZ=1)
    assert str(e.value) == "TOY_EL1 has no field 'T1SZ'"
    with pytest.raises(InputError) as e:
        TOY.encode(T0SZ=64)
    assert str(e.value) == "TOY_EL1.T0SZ=0x40: the field is 6 bits ([5:0])"
