"""s2mmu: an executable model of Arm64 two-stage memory virtualisation as KVM/arm64 does it.

The one-call entries (s2mmu.api): :func:`translate` an address through the regime the
registers describe, run an :func:`at` instruction; both return records with the answer
as the hardware reports it (``.pa``, ``.par``, ``.fault``, ``.esr()``, ``.far()``,
``.hpfar()``) and ``.explain()``, the walk level by level. The layers underneath:
``s2mmu.arch`` (the architecture), ``s2mmu.pgtable`` (KVM's page-table library).

>>> import s2mmu
>>> t = s2mmu.translate(0x4000_1234)        # no registers given: MMUs off
>>> t
Translation(va=0x40001234, pa=0x40001234, attrs='Device-nGnRnE', par=0x...)
>>> print(t.explain(walk=False))
VA 0x40001234 EL1 read in the EL1&0 regime
  SCTLR_EL1 not given: 0x30d00800 (M=0), stage 1 off
  HCR_EL2 not given: 0x80000000 (VM=0), stage 2 off
-> 0x40001234  Device-nGnRnE
>>> s2mmu.at("S1E1R", 0x4000_1234)
AtInstruction(op='S1E1R', va=0x40001234, el=2, par=0x...)
"""

from s2mmu.api import (
    AtInstruction,
    GuestMemory,
    Translation,
    at,
    guest_memory,
    profile,
    profiles,
    translate,
    translate_many,
)

__version__ = "0.1.0"

__all__ = ["AtInstruction", "GuestMemory", "Translation", "at", "guest_memory", "profile",
           "profiles", "translate", "translate_many"]
