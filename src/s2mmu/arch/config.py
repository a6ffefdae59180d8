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
    # Non-secure translation regimes (ASL AArch64.EncodePAR); QEMU reports 1.
    par_ns_nonsecure: bool = True
    # PAR_EL1.{ATTR,SH} "are permitted to report the resulting attributes, as determined
    # by any permitted implementation choices and any applicable configuration bits,
    # instead of reporting the values that appear in the translation table descriptors"
    # (PAR_EL1 field description; ASL ReportedPARAttrs). The model reports the tables'
    # attributes (MAIR, stage-2 MemAttr, their combination, FWB included) with these
    # configuration bits applied:
    # - SCTLR_ELx.C=0 (Normal becomes Non-cacheable): QEMU 7.2 does not apply it.
    par_sctlr_cacheability: bool = False
    # - HCR_EL2.CD=1 (stage-2 Normal becomes Non-cacheable): "always", "never", or
    #   "without_fwb" (QEMU 7.2 folds CD into its stage-2 MemAttr decode, which FWB skips).
    par_hcr_cd: str = "without_fwb"
    # A stage-2 MemAttr cacheability field of 0b00 for Normal memory (MemAttr 0bxx00 with
    # MemAttr[3:2] != 0) is CONSTRAINED UNPREDICTABLE: Non-cacheable, Write-Through or
    # Write-Back (ASL S2DecodeCacheability). QEMU 7.2 leaves the stage-1 cacheability
    # unchanged there, which is what "WB" gives.
    s2_reserved_cacheability: str = "WB"
    # Stage 1 of EL1&0 with HCR_EL2.VM=1 passes the descriptor's shareability to stage 2
    # unless the implementation applies the effective shareability (Device and Normal
    # Non-cacheable as Outer Shareable) at stage 1 already: IMPLEMENTATION DEFINED (ASL
    # AArch64.S1Translate, "Apply effective shareability at stage 1"). QEMU 7.2: no.
    s1_effective_shareability: bool = False
    # TxSZ outside [MinTxSZ, MaxTxSZ]: ASL AArch64.S1TxSZFaults/S2TxSZFaults. Below the
    # minimum must fault with FEAT_LVA (stage 1) / FEAT_LPA (stage 2); otherwise it is
    # IMPLEMENTATION DEFINED whether it faults or is treated as the nearest legal value.
    # "fault" = a level-0 Translation fault (QEMU 7.2); "clamp" = the nearest legal value.
    txsz_out_of_range: str = "fault"
    # A reserved TGx encoding, or a granule the implementation lacks, is treated as an
    # IMPLEMENTATION DEFINED implemented size (in KB) (ASL AArch64.S1DecodeTG0/TG1,
    # S2DecodeTG0). QEMU 7.2 picks the smallest implemented granule, 4KB.
    reserved_tg_granule: int = 4
    # Setting the access flag when the access takes a Permission fault is CONSTRAINED
    # UNPREDICTABLE (ASL AArch64.SettingAccessFlagPermitted, Unpredictable_AFUPDATE).
    # QEMU 7.2 never does it.
    af_update_on_permission_fault: bool = False
    # A contiguous range larger than the input address space may give a Translation
    # fault: IMPLEMENTATION DEFINED (ASL AArch64.ContiguousBitFaults). QEMU 7.2: no.
    contiguous_bit_faults: bool = False
    # A contiguous run whose entries disagree, or whose output address is not aligned to
    # the run, is misprogrammed: CONSTRAINED UNPREDICTABLE. The ASL (StageOA) takes the
    # output address bits below the run's size from the input address; the model, like
    # QEMU 7.2, by default takes the fetched descriptor's output address (as if the TLB
    # held that entry alone). Correctly programmed runs give the same result either way.
    contiguous_oa_from_ia: bool = False
    # With FEAT_BBM level 1 or 2, a block descriptor with nT (bit 16) set may give a
    # Translation fault: IMPLEMENTATION DEFINED (ASL AArch64.BlocknTFaults). QEMU 7.2: no.
    block_nt_faults: bool = False
    # A descriptor (or TCR/VTCR, with DS) SH field of 0b01 is reserved: CONSTRAINED
    # UNPREDICTABLE, it behaves as one of the defined values. The model uses this SH
    # encoding instead (0b00 Non-shareable, as Linux's AT emulation at.c does; QEMU 7.2 reports 0b01
    # as is in PAR_EL1, a divergence listed by the conformance harness).
    reserved_sh: int = 0b00
    # A reserved MAIR_ELx.Attr<n> encoding is CONSTRAINED UNPREDICTABLE (ASL
    # S1DecodeMemAttrs: ConstrainUnpredictableBits(RESMAIR), an UNKNOWN value).
    # "nearest": 0b0000ddxx reads as Device-dd and an inner nibble 0b0000 under a
    # non-zero outer nibble as Non-cacheable (QEMU 7.2 reports the reserved byte as
    # programmed in PAR_EL1.ATTR instead: a divergence the conformance harness lists);
    # "device": every reserved encoding reads as Device-nGnRnE.
    reserved_mair: str = "nearest"


DEFAULT_CHOICES = ImplChoices()
