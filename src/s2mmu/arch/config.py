"""IMPLEMENTATION DEFINED and CONSTRAINED UNPREDICTABLE choices, in one documented object.

The Arm ARM leaves these to the implementation. Defaults match QEMU 7.2 ``-cpu max``
(Debian 12), the conformance target, unless a field says otherwise. Nothing in the
model picks silently: every such choice reads this object.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImplChoices:
    """The model's answers where the architecture lets the implementation choose."""

    # PAR_EL1 bit 11 is RES1 in both formats; QEMU sets it.
    par_res1_bit11: bool = True
    # PAR_EL1.NS for a Non-secure result: the architecture makes it UNKNOWN for
    # Non-secure translation regimes; QEMU reports 1.
    par_ns_nonsecure: bool = True
    # TxSZ outside [MinTxSZ, MaxTxSZ] (CONSTRAINED UNPREDICTABLE, Unpredictable_RESTnSZ):
    # "fault" = a level-0 Translation fault (the choice QEMU 7.2 makes); "clamp" = treat
    # as the nearest legal value.
    txsz_out_of_range: str = "fault"
    # A reserved TGx encoding is treated as an IMPLEMENTATION DEFINED implemented size
    # (in KB). QEMU 7.2 treats reserved TG0 and TG1 as 4KB.
    reserved_tg_granule: int = 4
    # IPS/PS values above the implemented PA size are treated as PAMax (architected).
    # A reserved PS encoding (0b111 without FEAT_D128) is treated as PAMax: QEMU 7.2.
    reserved_ps_as_pamax: bool = True
    # A stage-2 SL0/SL2/T0SZ combination that is illegal gives a level-0 translation
    # fault on stage 2 (ASL AArch64.S2InvalidSL/S2InconsistentSL report Translation
    # fault at the start level... see walk.py); no choice is needed there.
    # AT S1E1R/W reporting of a stage-2 fault during the stage-1 walk when executed
    # from EL1 with stage 2 enabled: the architecture takes the exception to EL2.
    # PAR_EL1.ATTR for Device memory reports the Device encoding with bits[1:0] = 0.
    device_attr_low_bits_zero: bool = True


DEFAULT_CHOICES = ImplChoices()
