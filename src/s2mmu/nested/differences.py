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
        "S2_NO_HW_DIRTY", "nested.c walk_nested_s2_pgd",
        "with VTCR_EL2.HD=1 and FEAT_HAFDBS a stage-2 leaf with DBM=1 is writable (its "
        "dirty state is managed by hardware)",
        "writable comes from S2AP[1] alone: a clean DBM leaf is read-only to the walker",
        "the nested stage-2 walker does not look at DBM"),
    KvmDifference(
        "S2_NO_DS", "nested.c vtcr_to_walk_info, walk_nested_s2_pgd",
        "with VTCR_EL2.DS=1 descriptors are in the 52-bit form (OA[51:50] in bits [9:8]; "
        "4KB level-0 and 16KB level-1 blocks are valid)",
        "DS is not read: 48-bit descriptors, blocks from level 1 (4KB) or 2 (16KB, 64KB)",
        "the nested stage-2 walker has no 52-bit IPA support yet (its own comment)"),
    KvmDifference(
        "S2_OA_48BIT", "nested.c walk_nested_s2_pgd",
        "with FEAT_LPA a 64KB-granule descriptor's bits [15:12] are OA[51:48] (an output "
        "beyond the output size is an Address size fault) and level-1 blocks are valid",
        "the output address is bits [47:pgshift] of the descriptor; blocks start at level 2 "
        "with 64KB, so a level-1 block is a Translation fault",
        "the nested stage-2 walker has no 52-bit support (its own comment)"),
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
        "AT612_NO_AF_CHECK", "at.c walk_s1 (6.12; the v6.12 AT profile's s1_af_checked)",
        "an AF=0 stage-1 leaf is an Access flag fault (without hardware AF update)",
        "the leaf translates (or takes its permission fault): the walk never reads AF",
        "6.12's software walker has no access-flag check (measured by s2mmu kernel diff --at)"),
    KvmDifference(
        "AT612_PTW_ON_S1_FAULT", "at.c walk_s1 (6.12; ptw_on_s1_walk_fault)",
        "a stage-1 Translation or Address size fault reports PAR_EL1.PTW=0",
        "PAR_EL1.PTW=1 when the walk found the fault",
        "6.12's fail_s1_walk(wr, fst, true, false) in walk_s1 (measured by s2mmu kernel diff "
        "--at)"),
    KvmDifference(
        "AT612_S12_NEEDS_E2H", "at.c __kvm_at_s12 (6.12; s12_needs_e2h)",
        "AT S12E* with HCR_EL2.E2H=0 and stage 2 on reports both stages",
        "the stage-1 result (an IPA, bit 11 set) is left in PAR_EL1",
        "6.12 returns early unless vcpu_el2_e2h_is_set (measured by s2mmu kernel diff --at)"),
    KvmDifference(
        "AT612_FWB_DEVICE_NGNRNE", "at.c compute_par_s12 (6.12; fwb_device_nGnRnE)",
        "with FWB a stage-2 Device type combines with stage 1's (the stronger wins)",
        "Device-nGnRnE: s2_memattr & GENMASK(1,0) << 2 reads as s2_memattr & 0b1100",
        "operator precedence in 6.12's FWB Device case (measured by s2mmu kernel diff --at)"),
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
        "AT_PAR_NS", "at.c compute_par_s1, compute_par_s12",
        "PAR_EL1.NS of a result from a Non-secure translation regime is UNKNOWN (the "
        "PAR_EL1.NS field description); QEMU 7.2 and the model's default ImplChoices "
        "report 1",
        "a successful PAR_EL1 never has NS set (compute_par_s1 sets only bit 11, as "
        "SYS_PAR_EL1_NSE; compute_par_s12 builds ATTR, PA and SH only)",
        "both values are permitted; KVM builds the slow path's PAR_EL1 from the fields it "
        "computes"),
    KvmDifference(
        "AT_PAR_SCTLR_C", "at.c compute_par_s1",
        "PAR_EL1.{ATTR,SH} may report the descriptor's attributes or the resulting ones "
        "(the PAR_EL1 field description); QEMU 7.2 and the model's default ImplChoices "
        "report MAIR's attribute whatever SCTLR_ELx.C says",
        "with the regime's SCTLR_ELx.C=0 a Normal result reads as Normal Non-cacheable "
        "(0x44) and so Outer Shareable",
        "the slow path reports the resulting attribute; both answers are permitted"),
    KvmDifference(
        "AT_RESERVED_TG", "at.c setup_s1_walk",
        "a reserved TCR_ELx.TG0/TG1 encoding is treated as an IMPLEMENTATION DEFINED "
        "implemented granule (ASL AArch64.S1DecodeTG0/TG1); QEMU 7.2 and the model's "
        "default ImplChoices pick 4KB",
        "the software walk treats it as 64KB",
        "setup_s1_walk's IMPDEF choice (\"treat any other value as 64k\")"),
    KvmDifference(
        "AT_PTW_DEVICE", "at.c walk_s1; mmu.c user_mem_abort (the shadow's memory type)",
        "with L1's HCR_EL2.PTW=1 a stage-1 table walk access that L1's stage 2 maps as "
        "Device memory is a stage-2 Permission fault (S=1, PTW=1)",
        "the slow path never looks at HCR_EL2.PTW or the stage-2 memory type of a table, "
        "and the shadow stage 2 the fast path walks maps L1's memory with KVM's memory "
        "type (Normal), so the walk goes on",
        "walk_s1 checks only kvm_s2_trans_readable() of each table's IPA"),
    KvmDifference(
        "AT_CONTIGUOUS_OA", "at.c walk_s1, nested.c walk_nested_s2_pgd (contiguous_bit_shift)",
        "a contiguous run whose output address is not aligned to the run is misprogrammed "
        "(CONSTRAINED UNPREDICTABLE); QEMU 7.2 and the model's default ImplChoices take the "
        "fetched descriptor's output address",
        "the output bits below the run come from the input address (VA at stage 1, IPA at "
        "stage 2), as ASL StageOA computes them",
        "KVM's software walkers apply the contiguous hint to the output address; correctly "
        "programmed runs give the same answer either way"),
    KvmDifference(
        "AT_S12_TRANSIENT", "at.c combine_s1_s2_attr",
        "stage 1 Write-Back Transient combined with stage 2 Write-Through is Write-Through "
        "with stage 1's hints, transient included: 0b00RW (ASL S2CombineS1AttrHints)",
        "Write-Back Transient (0b01RW): the transient re-encoding looks at stage 1's type, "
        "which was Write-Back, not at the combined type",
        "combine_s1_s2_attr upgrades the transient stage-1 value to its non-transient type "
        "first and then re-encodes from that type"),
    KvmDifference(
        "AT_S12_HCR_CD", "at.c compute_par_s12",
        "PAR_EL1.{ATTR,SH} may report the resulting attributes (the PAR_EL1 field "
        "description); with HCR_EL2.FWB=1 QEMU 7.2 and the model's default ImplChoices "
        "(par_hcr_cd) report the combination without HCR_EL2.CD",
        "HCR_EL2.CD=1 makes every Normal result Normal Non-cacheable (0x44, Outer Shareable), "
        "with FWB as without",
        "compute_par_s12 applies CD after either combination; both answers are permitted"),
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



def s12_attribute_difference(fwb: bool, memattr: int, s1_attr: int) -> str:
    """Return the listed S12 attribute difference for a stage-2 MemAttr and stage-1 ATTR.

    fwb: L1's HCR_EL2.FWB; memattr: the stage-2 leaf's MemAttr[3:0]; s1_attr: PAR_EL1.ATTR
    of the stage-1 result. Returns "" where compute_par_s12 combines as the model does.
    """
    if (not fwb and memattr in (0b0100, 0b1000, 0b1100)) or (fwb and memattr & 7 == 0b100):
        return "AT_S12_RESERVED_MEMATTR"
    if s1_attr == 0xF0:
        return "AT_S12_TAGGED"
    if not fwb and wb_transient_over_wt(s1_attr, memattr):
        return "AT_S12_TRANSIENT"
    if fwb and memattr & 7 == 0b110:
        device_or_nc = s1_attr >> 4 == 0 or s1_attr == 0x44
        return "AT_S12_FWB_SH" if device_or_nc else "AT_S12_FWB_HINTS"
    return ""


def wb_transient_over_wt(s1_attr: int, memattr: int) -> bool:
    """Return whether a Normal stage 1 has a Write-Back Transient nibble (0b01RW, RW != 0)
    where stage 2's MemAttr (without FWB) is Write-Through for the same nibble."""
    if s1_attr >> 4 == 0 or memattr >> 2 == 0:
        return False
    for s1, s2 in ((s1_attr >> 4, memattr >> 2), (s1_attr & 0xF, memattr & 0b11)):
        if 0b0101 <= s1 <= 0b0111 and s2 == 0b10:
            return True
    return False


BY_NAME = {d.name: d for d in DIFFERENCES + S12_ATTRIBUTE_DIFFERENCES}
