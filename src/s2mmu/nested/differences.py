"""Where KVM's nested walk and AT emulation report something other than the architecture.

The model follows KVM in each case (that is what a guest hypervisor sees); this is the
one list of those cases, each with the architecture's answer and the reason. Tests
name the entry they exercise, and the differential tests exclude exactly these.

Kernel: arch/arm64/kvm/nested.c, arch/arm64/kvm/at.c (as read, see each entry).
ASL: AArch64.S2Walk, AArch64.S1Walk, AArch64.S2InconsistentSL, AArch64.VAIsOutOfRange,
AArch64.S2TxSZFaults, AArch64.EncodePAR, AArch64.MemSwapTableDesc.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KvmDifference:
    """One case where KVM's answer is not the architecture's."""

    name: str
    where: str
    architecture: str
    kvm: str
    reason: str


DIFFERENCES = (
    KvmDifference(
        "S2_WALK_LIMITS", "nested.c check_base_s2_limits, walk_nested_s2_pgd",
        "any SL0/T0SZ pair that AArch64.S2InconsistentSL accepts is walked (4KB from "
        "level 0 with a 40-42-bit IPA, 16KB from level 1 with 37-40 bits); a T0SZ out of "
        "range is a level-0 Translation fault or IMPLEMENTATION DEFINED",
        "the walk is refused with -EFAULT (and a WARN): no fault is reported",
        "KVM only walks the layouts Linux itself would build"),
    KvmDifference(
        "S2_IPA_SIZE_UNCHECKED", "nested.c walk_nested_s2_pgd",
        "an IPA above 2^(64-T0SZ) is a level-0 Translation fault "
        "(AArch64.IPAIsOutOfRange), and T0SZ below 64-PAMax must fault with FEAT_LPA",
        "input bits above the IPA size are not looked at; any IPA size up to 48 bits is "
        "walked whatever the VM's PA size",
        "the callers pass IPAs the shadow stage 2 produced, which are in range"),
    KvmDifference(
        "S2_BASE_ADDRSZ_LEVEL", "nested.c walk_nested_s2_pgd",
        "a VTTBR_EL2 base beyond the output size is an Address size fault at level 0",
        "it is reported at the start level",
        "the walker reports every fault at the level it is looking at"),
    KvmDifference(
        "S2_NO_HW_AF", "nested.c walk_nested_s2_pgd",
        "with VTCR_EL2.HA=1 and FEAT_HAFDBS an AF=0 stage-2 leaf gets AF set",
        "AF=0 always gives an Access flag fault",
        "the nested stage-2 walker never updates L1's descriptors"),
    KvmDifference(
        "AT_S2_FAULT_LEVEL", "at.c walk_s1",
        "a stage-2 fault on the stage-1 walk reports the stage-2 walk's level",
        "PAR_EL1.FST carries the stage-1 level, with S=1 and PTW=1",
        "walk_s1 replaces the level of the stage-2 FSC with its own"),
    KvmDifference(
        "AT_S2_REFUSED_WALK", "at.c walk_s1 with kvm_walk_nested_s2 returning -EFAULT",
        "the architecture has no refusal (see S2_WALK_LIMITS; a bad descriptor read is a "
        "synchronous External abort on the walk)",
        "PAR_EL1.FST is the bare level, an Address size fault, with S=1 and PTW=1",
        "the stage-2 result carries no FSC and walk_s1 only ORs the level in"),
    KvmDifference(
        "AT_VA_ADDRSZ", "at.c setup_s1_walk",
        "a VA outside the regime's range (bit 55 set in the one-range EL2 regime, or a "
        "top byte that is not the sign extension without TBI) is a level-0 "
        "Translation fault (AArch64.VAIsOutOfRange)",
        "a level-0 Address size fault",
        "setup_s1_walk checks the VA's form before the range and uses one label"),
    KvmDifference(
        "AT_S1_BLOCK_LEVELS", "at.c walk_s1",
        "a 64KB block at level 1 is a valid descriptor when PAMax() is 52 (FEAT_LPA), and "
        "4KB level-0 and 16KB level-1 blocks are with TCR_ELx.DS (AArch64.BlockDescSupported)",
        "the software walk accepts blocks at levels 1 and 2 with 4KB and at level 2 only "
        "with 16KB and 64KB; any other block is a Translation fault at its level",
        "walk_s1's valid_block knows only the 48-bit layouts (found by s2mmu kernel diff "
        "--at against 6.12's at.c)"),
    KvmDifference(
        "AT_PAR_PA_48BIT", "at.c compute_par_s1",
        "with FEAT_LPA a successful AT reports PA[51:48] in PAR_EL1[51:48]",
        "PAR_EL1 carries PA[47:12] only: bits 51:48 of the output address are dropped",
        "compute_par_s1 masks the output address with GENMASK_ULL(47, 12) (found by "
        "s2mmu kernel diff --at against 6.12's at.c with a 52-bit PA VM, MMU off)"),
    KvmDifference(
        "AT_S12_PAR_BIT11", "at.c compute_par_s12",
        "PAR_EL1 bit 11 is RES1 (reads as 1) in both formats",
        "a successful AT S12E* returns PAR_EL1 with bit 11 clear (stage-1-only results "
        "set it)",
        "compute_par_s12 builds PAR_EL1 from ATTR, PA and SH only"),
    KvmDifference(
        "AT_S12_REFUSED_WALK", "at.c __kvm_at_s12",
        "see S2_WALK_LIMITS",
        "a refused stage-2 walk leaves the stage-1 result (an IPA) in PAR_EL1",
        "__kvm_at_s12 returns before writing PAR_EL1 when the walk returns an error"),
)

# compute_par_s12 against the model's attribute combination (arch.translate.combine_attrs
# and ImplChoices), found by tests/nested/test_at.py on every stage-1 MAIR class and
# stage-2 MemAttr, with and without FWB.
S12_ATTRIBUTE_DIFFERENCES = (
    KvmDifference(
        "AT_S12_RESERVED_MEMATTR", "at.c s2_memattr_to_attr, compute_par_s12",
        "a reserved stage-2 MemAttr (0b0100, 0b1000, 0b1100; with FWB 0bx100) is "
        "CONSTRAINED UNPREDICTABLE; the model's ImplChoices.s2_reserved_cacheability picks",
        "0b0100 reads as Normal WB, 0b1000/0b1100 as Normal NC; with FWB stage 1's "
        "attributes are kept",
        "KVM picks its own permitted answer"),
    KvmDifference(
        "AT_S12_TAGGED", "at.c combine_s1_s2_attr",
        "a stage-1 Tagged Normal WB (MAIR 0xF0) combines as Write-Back",
        "0xF0 is combined nibble by nibble, its inner nibble 0 read as a hint-less type",
        "the combination works on MAIR nibbles and has no case for the Tagged encoding"),
    KvmDifference(
        "AT_S12_FWB_SH", "at.c compute_par_s12, combine_sh",
        "with FWB MemAttr 0b110 (forced Write-Back) the shareability combines the "
        "descriptors' SH fields",
        "stage 1's reported shareability is combined, so a Device or Normal NC stage 1 "
        "makes the result Outer Shareable",
        "combine_sh takes PAR_EL1.SH of the stage-1 result, already normalised"),
    KvmDifference(
        "AT_S12_FWB_HINTS", "at.c compute_par_s12",
        "with FWB MemAttr 0b110 the result is Write-Back with stage 1's allocation hints "
        "where stage 1 is cacheable",
        "always Write-Back Read/Write-Allocate (0xFF)",
        "the FWB case returns a fixed attribute"),
)

BY_NAME = {d.name: d for d in DIFFERENCES + S12_ATTRIBUTE_DIFFERENCES}
