"""The machine state a translation starts from: register values and PSTATE.

A SysRegs holds raw 64-bit values (defaults as in shared/formats/at-case.md: MMUs off).
Walkers never read it: GetS1TTWParams/GetS2TTWParams read it once into walk parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from enum import Enum
from typing import Any

from s2mmu.arch.bits import bit
from s2mmu.arch.errors import InputError
from s2mmu.arch.inputs import shorten, shorten_hex
from s2mmu.arch.registers import HCR_EL2


class Regime(Enum):
    """ASL Regime: the translation regimes s2mmu models (all Non-secure)."""

    # Members are singletons compared by identity: hash them as such, in C (Enum's
    # own __hash__ is Python code, and walk parameters are hashed on every walk).
    __hash__ = object.__hash__

    EL10 = "EL1&0"
    EL20 = "EL2&0"
    EL2 = "EL2"

    def has_two_ranges(self) -> bool:
        """Return whether the regime has TTBR0 and TTBR1 (ASL HasUnprivileged/TTBR1)."""
        return self is not Regime.EL2

    def has_el0(self) -> bool:
        """Return whether EL0 accesses are translated by this regime."""
        return self is not Regime.EL2


@dataclass(frozen=True)
class SysRegs:
    """Raw values of the system registers a translation can depend on."""

    SCTLR_EL1: int = 0x30D00800
    TCR_EL1: int = 0
    MAIR_EL1: int = 0
    TTBR0_EL1: int = 0
    TTBR1_EL1: int = 0
    AMAIR_EL1: int = 0
    CONTEXTIDR_EL1: int = 0
    HCR_EL2: int = 0x80000000
    VTCR_EL2: int = 0x80000000
    VTTBR_EL2: int = 0
    SCTLR_EL2: int = 0x30C50830
    TCR_EL2: int = 0x80800000
    TTBR0_EL2: int = 0
    TTBR1_EL2: int = 0
    MAIR_EL2: int = 0
    CONTEXTIDR_EL2: int = 0
    HCRX_EL2: int = 0
    # FEAT_TCR2, FEAT_S1PIE/S2PIE, FEAT_S1POE/S2POE (0: the extensions' controls off).
    TCR2_EL1: int = 0
    TCR2_EL2: int = 0
    PIR_EL1: int = 0
    PIRE0_EL1: int = 0
    PIR_EL2: int = 0
    PIRE0_EL2: int = 0
    POR_EL0: int = 0
    POR_EL1: int = 0
    POR_EL2: int = 0
    S2PIR_EL2: int = 0
    S2POR_EL1: int = 0

    @classmethod
    def names(cls) -> list[str]:
        """Return the register names a SysRegs holds."""
        return [f.name for f in fields(cls)]

    @classmethod
    def from_mapping(cls, values: dict[str, int]) -> SysRegs:
        """Return SysRegs with the given registers set; unknown names are an InputError."""
        known = set(cls.names())
        for name, value in values.items():
            if name not in known:
                raise InputError(f"unknown register {shorten(name)} "
                                 f"(known: {', '.join(sorted(known))})")
            if not 0 <= value < 1 << 64:
                raise InputError(f"{name}: value {shorten_hex(value)} does not fit in 64 bits")
        return replace(cls(), **values)

    def to_mapping(self) -> dict[str, int]:
        """Return every register's raw value by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def hcr(self) -> Any:
        """Return the decoded HCR_EL2 view."""
        return HCR_EL2.decode(self.HCR_EL2)

    def e2h(self) -> bool:
        """Return HCR_EL2.E2H."""
        return bool(bit(self.HCR_EL2, 34))

    def tge(self) -> bool:
        """Return HCR_EL2.TGE."""
        return bool(bit(self.HCR_EL2, 27))


def regime_for(el: int, regs: SysRegs) -> Regime:
    """Return the translation regime of an access from el (ASL TranslationRegime).

    EL0 with E2H=TGE=1 is translated by EL2&0. el is 0, 1 or 2: the model has no
    EL3 regime (InputError otherwise).
    """
    if el not in (0, 1, 2):
        raise InputError(f"el={shorten(el)}: the modelled regimes translate accesses from "
                         "EL0, EL1 and EL2 (EL1&0, EL2, EL2&0)")
    if el == 2:
        return Regime.EL20 if regs.e2h() else Regime.EL2
    if el == 0 and regs.e2h() and regs.tge():
        return Regime.EL20
    return Regime.EL10
