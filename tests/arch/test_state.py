"""Machine state: register values by name, and the regime an access is translated in."""

import pytest

from s2mmu.arch.errors import InputError
from s2mmu.arch.registers import HCR_EL2
from s2mmu.arch.state import Regime, SysRegs, regime_for


def test_defaults_are_mmus_off():
    regs = SysRegs()
    assert (regs.SCTLR_EL1, regs.SCTLR_EL2, regs.HCR_EL2) == (0x30D00800, 0x30C50830, 0x80000000)
    assert regs.SCTLR_EL1 & 1 == 0 and regs.SCTLR_EL2 & 1 == 0


def test_from_mapping_rejects_unknown_register():
    with pytest.raises(InputError, match=r"^unknown register 'TCR_EL3' \(known: "):
        SysRegs.from_mapping({"TCR_EL3": 0})


def test_from_mapping_rejects_wide_value():
    with pytest.raises(InputError) as e:
        SysRegs.from_mapping({"TCR_EL1": 1 << 64})
    assert str(e.value) == "TCR_EL1: value 0x10000000000000000 does not fit in 64 bits"


def test_round_trip_mapping():
    regs = SysRegs.from_mapping({"TCR_EL1": 5, "VTTBR_EL2": 0x1000})
    assert SysRegs.from_mapping(regs.to_mapping()) == regs
    assert "HCRX_EL2" in SysRegs.names()


@pytest.mark.parametrize(("el", "hcr", "regime"), [
    (0, 0, Regime.EL10), (1, 0, Regime.EL10), (2, 0, Regime.EL2),
    (2, HCR_EL2.encode(E2H=1), Regime.EL20), (0, HCR_EL2.encode(E2H=1), Regime.EL10),
    (0, HCR_EL2.encode(E2H=1, TGE=1), Regime.EL20), (0, HCR_EL2.encode(TGE=1), Regime.EL10),
])
def test_translation_regime(el, hcr, regime):
    assert regime_for(el, SysRegs(HCR_EL2=0x80000000 | hcr)) is regime


def test_regime_shapes():
    assert not Regime.EL2.has_two_ranges() and not Regime.EL2.has_el0()
    assert Regime.EL20.has_two_ranges() and Regime.EL10.has_el0()


@pytest.mark.parametrize("el", [3, -1])
def test_regime_for_refuses_an_el_no_modelled_regime_translates_for(el):
    with pytest.raises(InputError) as e:
        regime_for(el, SysRegs())
    assert str(e.value) == (f"el={el}: the modelled regimes translate accesses from EL0, EL1 "
                            "and EL2 (EL1&0, EL2, EL2&0)")
