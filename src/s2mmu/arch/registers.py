"""The system registers s2mmu reads, declared once in Arm's field names.

Layouts follow the Arm ARM (DDI 0487) register descriptions in chapter D23; the field
lists match the kernel's arch/arm64/tools/sysreg where both describe a register.
"""

from __future__ import annotations

from s2mmu.arch.faults import FSC_NAMES
from s2mmu.arch.sysreg import Field as F
from s2mmu.arch.sysreg import RegisterSpec, Res0, Res1

TG0_ENC = {0b00: "4KB", 0b01: "64KB", 0b10: "16KB", 0b11: "reserved"}
TG1_ENC = {0b00: "reserved", 0b01: "16KB", 0b10: "4KB", 0b11: "64KB"}
PS_ENC = {0: "32 bits, 4GB", 1: "36 bits, 64GB", 2: "40 bits, 1TB", 3: "42 bits, 4TB",
          4: "44 bits, 16TB", 5: "48 bits, 256TB", 6: "52 bits, 4PB", 7: "56 bits (FEAT_D128)"}
RGN_ENC = {0: "Non-cacheable", 1: "WB RA WA", 2: "WT RA nWA", 3: "WB RA nWA"}
SH_ENC = {0: "Non-shareable", 1: "reserved", 2: "Outer Shareable", 3: "Inner Shareable"}

_SCTLR_ITEMS = (
    F(63, 63, "TIDCP"), F(62, 62, "SPINTMASK"), F(61, 61, "NMI"), F(60, 60, "EnTP2"),
    F(59, 59, "TCSO"), F(58, 58, "TCSO0"),
    F(57, 57, "EPAN", {0: "PAN ignores EL0-executable pages",
                       1: "PAN also applies to EL0-executable pages"}, feature="FEAT_PAN3"),
    F(56, 56, "EnALS"),
    F(55, 55, "EnAS0"), F(54, 54, "EnASR"), F(53, 53, "TME"), F(52, 52, "TME0"),
    F(51, 51, "TMT"), F(50, 50, "TMT0"), F(49, 46, "TWEDEL"), F(45, 45, "TWEDEn"),
    F(44, 44, "DSSBS"), F(43, 43, "ATA"), F(42, 42, "ATA0"), F(41, 40, "TCF"),
    F(39, 38, "TCF0"), F(37, 37, "ITFSB"), F(36, 36, "BT1"), F(35, 35, "BT0"),
    F(34, 34, "EnFPM"), F(33, 33, "MSCEn"), F(32, 32, "CMOW"), F(31, 31, "EnIA"),
    F(30, 30, "EnIB"), F(29, 29, "LSMAOE"), F(28, 28, "nTLSMD"), F(27, 27, "EnDA"),
    F(26, 26, "UCI"), F(25, 25, "EE", {0: "little-endian", 1: "big-endian"}),
    F(24, 24, "E0E"), F(23, 23, "SPAN"), F(22, 22, "EIS"), F(21, 21, "IESB"),
    F(20, 20, "TSCXT"),
    F(19, 19, "WXN", {0: "no effect", 1: "writable memory is execute-never"}),
    F(18, 18, "nTWE"), F(17, 17, "RES0_17"),
    F(16, 16, "nTWI"), F(15, 15, "UCT"), F(14, 14, "DZE"), F(13, 13, "EnDB"),
    F(12, 12, "I", {0: "instruction accesses Non-cacheable",
                    1: "no effect on instruction cacheability"}),
    F(11, 11, "EOS"), F(10, 10, "EnRCTX"), F(9, 9, "UMA"), F(8, 8, "SED"),
    F(7, 7, "ITD"), F(6, 6, "nAA"), F(5, 5, "CP15BEN"), F(4, 4, "SA0"), F(3, 3, "SA"),
    F(2, 2, "C", {0: "data accesses Non-cacheable", 1: "no effect on data cacheability"}),
    F(1, 1, "A", {0: "alignment fault checking disabled",
                  1: "alignment fault checking enabled"}),
    F(0, 0, "M", {0: "MMU off", 1: "MMU on"}),
)
SCTLR_EL1 = RegisterSpec("SCTLR_EL1", _SCTLR_ITEMS)
# With HCR_EL2.E2H=1 SCTLR_EL2 has SCTLR_EL1's layout; with E2H=0 the EL0 controls are RES1
# or RES0, but every field the walk reads (M, C, I, WXN, EE, EPAN is EL1&0-only) sits at the
# same bit, so one declaration serves both.
SCTLR_EL2 = RegisterSpec("SCTLR_EL2", _SCTLR_ITEMS)

HA_ENC = {0: "no hardware Access flag update", 1: "hardware Access flag update enabled"}
HD_ENC = {0: "no hardware dirty state management",
          1: "hardware dirty state management enabled (with HA=1)"}
TBI_ENC = {0: "top byte used in address calculation", 1: "top byte ignored"}
EPD_ENC = {0: "walks on a TLB miss", 1: "no walk: a TLB miss is a level 0 Translation fault"}
HPD_ENC = {0: "hierarchical permissions enabled", 1: "hierarchical permissions disabled"}
E0PD_ENC = {0: "EL0 may access this range",
            1: "EL0 accesses fault (level 0 Translation fault, FEAT_E0PD)"}
HWU = "FEAT_HPDS2"
_TCR_EL1_ITEMS = (
    Res0(63, 62), F(61, 61, "MTX1"), F(60, 60, "MTX0"), F(59, 59, "DS", feature="FEAT_LPA2"),
    F(58, 58, "TCMA1"), F(57, 57, "TCMA0"),
    F(56, 56, "E0PD1", E0PD_ENC, feature="FEAT_E0PD"),
    F(55, 55, "E0PD0", E0PD_ENC, feature="FEAT_E0PD"), F(54, 54, "NFD1"),
    F(53, 53, "NFD0"), F(52, 52, "TBID1"), F(51, 51, "TBID0"),
    F(50, 50, "HWU162", feature=HWU), F(49, 49, "HWU161", feature=HWU),
    F(48, 48, "HWU160", feature=HWU), F(47, 47, "HWU159", feature=HWU),
    F(46, 46, "HWU062", feature=HWU), F(45, 45, "HWU061", feature=HWU),
    F(44, 44, "HWU060", feature=HWU), F(43, 43, "HWU059", feature=HWU),
    F(42, 42, "HPD1", HPD_ENC, feature="FEAT_HPDS"),
    F(41, 41, "HPD0", HPD_ENC, feature="FEAT_HPDS"), F(40, 40, "HD", HD_ENC, feature="FEAT_HAFDBS"),
    F(39, 39, "HA", HA_ENC, feature="FEAT_HAFDBS"), F(38, 38, "TBI1", TBI_ENC),
    F(37, 37, "TBI0", TBI_ENC),
    F(36, 36, "AS", {0: "8-bit ASID", 1: "16-bit ASID"}), Res0(35, 35), F(34, 32, "IPS", PS_ENC),
    F(31, 30, "TG1", TG1_ENC),
    F(29, 28, "SH1", SH_ENC), F(27, 26, "ORGN1", RGN_ENC), F(25, 24, "IRGN1", RGN_ENC),
    F(23, 23, "EPD1", EPD_ENC), F(22, 22, "A1", {0: "TTBR0_ELx.ASID is the ASID",
                                                 1: "TTBR1_ELx.ASID is the ASID"}),
    F(21, 16, "T1SZ"), F(15, 14, "TG0", TG0_ENC),
    F(13, 12, "SH0", SH_ENC), F(11, 10, "ORGN0", RGN_ENC), F(9, 8, "IRGN0", RGN_ENC),
    F(7, 7, "EPD0", EPD_ENC), Res0(6, 6), F(5, 0, "T0SZ"),
)
TCR_EL1 = RegisterSpec("TCR_EL1", _TCR_EL1_ITEMS)
# TCR_EL2 when HCR_EL2.E2H=1: the two-range layout of TCR_EL1.
TCR_EL2_E2H1 = RegisterSpec("TCR_EL2", _TCR_EL1_ITEMS)
# TCR_EL2 when HCR_EL2.E2H=0: one range.
TCR_EL2_E2H0 = RegisterSpec("TCR_EL2", (
    Res0(63, 34), F(33, 33, "MTX"), F(32, 32, "DS", feature="FEAT_LPA2"), Res1(31, 31),
    F(30, 30, "TCMA"), F(29, 29, "TBID"), F(28, 28, "HWU62", feature=HWU),
    F(27, 27, "HWU61", feature=HWU), F(26, 26, "HWU60", feature=HWU),
    F(25, 25, "HWU59", feature=HWU), F(24, 24, "HPD", HPD_ENC, feature="FEAT_HPDS"),
    Res1(23, 23), F(22, 22, "HD", HD_ENC, feature="FEAT_HAFDBS"),
    F(21, 21, "HA", HA_ENC, feature="FEAT_HAFDBS"),
    F(20, 20, "TBI", TBI_ENC), Res0(19, 19), F(18, 16, "PS", PS_ENC), F(15, 14, "TG0", TG0_ENC),
    F(13, 12, "SH0", SH_ENC), F(11, 10, "ORGN0", RGN_ENC), F(9, 8, "IRGN0", RGN_ENC),
    Res0(7, 6), F(5, 0, "T0SZ"),
))

# VTCR_EL2: a field that an extension adds is declared with that extension, so a decode
# for a CPU without it reads the bits as RES0 (Arm ARM VTCR_EL2 field descriptions,
# "When FEAT_x is implemented: ... Otherwise: Reserved, RES0").
VTCR_EL2 = RegisterSpec("VTCR_EL2", (
    Res0(63, 46), F(45, 45, "HDBSS", feature="FEAT_HDBSS"),
    F(44, 44, "HAFT", feature="FEAT_HAFT"), Res0(43, 42),
    F(41, 41, "TL0", feature="FEAT_THE"), F(40, 40, "GCSH", feature="FEAT_THE"), Res0(39, 39),
    F(38, 38, "D128", feature="FEAT_D128"), F(37, 37, "S2POE", feature="FEAT_S2POE"),
    F(36, 36, "S2PIE", feature="FEAT_S2PIE"), F(35, 35, "TL1", feature="FEAT_THE"),
    F(34, 34, "AssuredOnly", feature="FEAT_THE"),
    F(33, 33, "SL2", feature="FEAT_LPA2"), F(32, 32, "DS", feature="FEAT_LPA2"), Res1(31, 31),
    F(30, 30, "NSA", feature="FEAT_SEL2"), F(29, 29, "NSW", feature="FEAT_SEL2"),
    F(28, 28, "HWU62", feature="FEAT_HPDS2"), F(27, 27, "HWU61", feature="FEAT_HPDS2"),
    F(26, 26, "HWU60", feature="FEAT_HPDS2"), F(25, 25, "HWU59", feature="FEAT_HPDS2"),
    Res0(24, 23), F(22, 22, "HD", HD_ENC, feature="FEAT_HAFDBS"),
    F(21, 21, "HA", HA_ENC, feature="FEAT_HAFDBS"), Res0(20, 20),
    F(19, 19, "VS", {0: "8-bit VMID", 1: "16-bit VMID"}, feature="FEAT_VMID16"),
    F(18, 16, "PS", PS_ENC), F(15, 14, "TG0", TG0_ENC), F(13, 12, "SH0", SH_ENC),
    F(11, 10, "ORGN0", RGN_ENC), F(9, 8, "IRGN0", RGN_ENC), F(7, 6, "SL0"), F(5, 0, "T0SZ"),
))

_TTBR_ITEMS = (F(63, 48, "ASID"), F(47, 1, "BADDR"), F(0, 0, "CnP"))
TTBR0_EL1 = RegisterSpec("TTBR0_EL1", _TTBR_ITEMS)
TTBR1_EL1 = RegisterSpec("TTBR1_EL1", _TTBR_ITEMS)
TTBR0_EL2 = RegisterSpec("TTBR0_EL2", _TTBR_ITEMS)
TTBR1_EL2 = RegisterSpec("TTBR1_EL2", _TTBR_ITEMS)
VTTBR_EL2 = RegisterSpec("VTTBR_EL2", (F(63, 48, "VMID"), F(47, 1, "BADDR"), F(0, 0, "CnP")))

_MAIR_ITEMS = tuple(F(8 * n + 7, 8 * n, f"Attr{n}") for n in range(7, -1, -1))
MAIR_EL1 = RegisterSpec("MAIR_EL1", _MAIR_ITEMS)
MAIR_EL2 = RegisterSpec("MAIR_EL2", _MAIR_ITEMS)
AMAIR_EL1 = RegisterSpec("AMAIR_EL1", (F(63, 0, "IMPLEMENTATION_DEFINED"),))
CONTEXTIDR_EL1 = RegisterSpec("CONTEXTIDR_EL1", (Res0(63, 32), F(31, 0, "PROCID")))
CONTEXTIDR_EL2 = RegisterSpec("CONTEXTIDR_EL2", (Res0(63, 32), F(31, 0, "PROCID")))

HCR_EL2 = RegisterSpec("HCR_EL2", (
    F(63, 60, "TWEDEL"), F(59, 59, "TWEDEn"), F(58, 58, "TID5"), F(57, 57, "DCT"),
    F(56, 56, "ATA"), F(55, 55, "TTLBOS"), F(54, 54, "TTLBIS"), F(53, 53, "EnSCXT"),
    F(52, 52, "TOCU"), F(51, 51, "AMVOFFEN"), F(50, 50, "TICAB"), F(49, 49, "TID4"),
    F(48, 48, "GPF"), F(47, 47, "FIEN"), F(46, 46, "FWB"), F(45, 45, "NV2"), F(44, 44, "AT"),
    F(43, 43, "NV1"), F(42, 42, "NV"), F(41, 41, "API"), F(40, 40, "APK"), F(39, 39, "TME"),
    F(38, 38, "MIOCNCE"), F(37, 37, "TEA"), F(36, 36, "TERR"), F(35, 35, "TLOR"),
    F(34, 34, "E2H"), F(33, 33, "ID"), F(32, 32, "CD"), F(31, 31, "RW"), F(30, 30, "TRVM"),
    F(29, 29, "HCD"), F(28, 28, "TDZ"), F(27, 27, "TGE"), F(26, 26, "TVM"), F(25, 25, "TTLB"),
    F(24, 24, "TPU"), F(23, 23, "TPCP"), F(22, 22, "TSW"), F(21, 21, "TACR"),
    F(20, 20, "TIDCP"), F(19, 19, "TSC"), F(18, 18, "TID3"), F(17, 17, "TID2"),
    F(16, 16, "TID1"), F(15, 15, "TID0"), F(14, 14, "TWE"), F(13, 13, "TWI"), F(12, 12, "DC"),
    F(11, 10, "BSU"), F(9, 9, "FB"), F(8, 8, "VSE"), F(7, 7, "VI"), F(6, 6, "VF"),
    F(5, 5, "AMO"), F(4, 4, "IMO"), F(3, 3, "FMO"), F(2, 2, "PTW"), F(1, 1, "SWIO"),
    F(0, 0, "VM"),
))

HCRX_EL2 = RegisterSpec("HCRX_EL2", (
    Res0(63, 27), F(26, 26, "SRMASKEn"), F(25, 25, "EnIDCP128"), F(24, 24, "PACMEn"),
    F(23, 23, "EnFPM"), F(22, 22, "GCSEn"), F(21, 21, "EnIDCP128_21"), F(20, 20, "EnSDERR"),
    F(19, 19, "TMEA"), F(18, 18, "EnSNERR"), F(17, 17, "D128En"), F(16, 16, "PTTWI"),
    F(15, 15, "SCTLR2En"), F(14, 14, "TCR2En"), Res0(13, 12), F(11, 11, "MSCEn"),
    F(10, 10, "MCE2"), F(9, 9, "CMOW"), F(8, 8, "VFNMI"), F(7, 7, "VINMI"),
    F(6, 6, "TALLINT"), F(5, 5, "SMPME"), F(4, 4, "FGTnXS"), F(3, 3, "FnXS"),
    F(2, 2, "EnASR"), F(1, 1, "EnALS"), F(0, 0, "EnAS0"),
))

# PAR_EL1 has two layouts selected by PAR_EL1.F (Arm ARM D24.2.142, the 64-bit formats
# "When FEAT_D128 is not implemented"). Bit 11 is NSE only with FEAT_RME, "Otherwise:
# Reserved, RES1" on success; on a fault it is RES1 and bit 10 RES0.
PAR_EL1_OK = RegisterSpec("PAR_EL1", (
    F(63, 56, "ATTR"), Res0(55, 52), F(51, 12, "PA"),
    F(11, 11, "NSE", feature="FEAT_RME", absent="RES1"),
    F(10, 10, "IMPDEF"), F(9, 9, "NS"), F(8, 7, "SH", SH_ENC), Res0(6, 1),
    F(0, 0, "F", {0: "address translation completed successfully"}),
))
PAR_EL1_FAULT = RegisterSpec("PAR_EL1", (
    F(63, 56, "IMPDEF_63_56"), F(55, 52, "IMPDEF_55_52"), F(51, 48, "IMPDEF_51_48"),
    Res0(47, 12), Res1(11, 11), Res0(10, 10),
    F(9, 9, "S", {0: "fault in the stage 1 translation", 1: "fault in the stage 2 translation"}),
    F(8, 8, "PTW", {0: "not a stage 2 fault on a stage 1 table walk",
                    1: "stage 2 fault during a stage 1 translation table walk"}),
    Res0(7, 7), F(6, 1, "FST", FSC_NAMES),
    F(0, 0, "F", {1: "address translation aborted"}),
))

EC_ENC = {0x00: "Unknown reason (UNDEFINED)", 0x20: "Instruction Abort from a lower EL",
          0x21: "Instruction Abort from the same EL", 0x24: "Data Abort from a lower EL",
          0x25: "Data Abort from the same EL", 0x16: "HVC", 0x17: "SMC", 0x18: "MSR/MRS/AT trap"}
# ESR_ELx fields in the Arm ARM's words (ESR_EL2, "ISS encoding for an exception from a
# Data Abort" / "... from an Instruction Abort"). Fields whose meaning depends on other
# fields (SAS/SSE/SRT/SF/AR need ISV=1; SET/FnV need an External abort) are explained in
# s2mmu.arch.regdecode.
IL_ENC = {0: "16-bit instruction trapped", 1: "32-bit instruction trapped"}
S1PTW_ENC = {0: "fault not on a stage 2 translation for a stage 1 translation table walk",
             1: "fault on the stage 2 translation of an access for a stage 1 translation "
                "table walk"}
ESR_ELx = RegisterSpec("ESR_ELx", (
    Res0(63, 56), F(55, 32, "ISS2"), F(31, 26, "EC", EC_ENC), F(25, 25, "IL", IL_ENC),
    F(24, 0, "ISS"),
))
ESR_ELx_DABT = RegisterSpec("ESR_ELx", (
    Res0(63, 56), F(55, 32, "ISS2"), F(31, 26, "EC", EC_ENC), F(25, 25, "IL", IL_ENC),
    F(24, 24, "ISV", {0: "no valid instruction syndrome: ISS[23:14] are RES0",
                      1: "ISS[23:14] hold a valid instruction syndrome"}),
    F(23, 22, "SAS", {0: "byte", 1: "halfword", 2: "word", 3: "doubleword"}),
    F(21, 21, "SSE", {0: "sign-extension not required", 1: "data item must be sign-extended"}),
    F(20, 16, "SRT"),
    F(15, 15, "SF", {0: "32-bit general-purpose register (Wt)",
                     1: "64-bit general-purpose register (Xt)"}),
    F(14, 14, "AR", {0: "no acquire/release semantics", 1: "acquire/release semantics"}),
    F(13, 13, "VNCR", {0: "not from a use of VNCR_EL2",
                       1: "from a use of VNCR_EL2 by EL1 (FEAT_NV2)"}, feature="FEAT_NV2"),
    F(12, 11, "SET"), F(10, 10, "FnV"), F(9, 9, "EA"),
    F(8, 8, "CM", {0: "not from a cache maintenance or address translation instruction",
                   1: "from a cache maintenance or address translation instruction"}),
    F(7, 7, "S1PTW", S1PTW_ENC),
    F(6, 6, "WnR", {0: "abort caused by an instruction reading from memory",
                    1: "abort caused by an instruction writing to memory"}),
    F(5, 0, "DFSC", FSC_NAMES),
))
ESR_ELx_IABT = RegisterSpec("ESR_ELx", (
    Res0(63, 56), F(55, 32, "ISS2"), F(31, 26, "EC", EC_ENC), F(25, 25, "IL", IL_ENC),
    Res0(24, 13), F(12, 11, "SET"), F(10, 10, "FnV"), F(9, 9, "EA"), Res0(8, 8),
    F(7, 7, "S1PTW", S1PTW_ENC), Res0(6, 6), F(5, 0, "IFSC", FSC_NAMES),
))
FAR_ELx = RegisterSpec("FAR_ELx", (F(63, 0, "VA"),))
# HPFAR_EL2.NS exists only with FEAT_SEL2 (Secure EL2), which s2mmu does not model.
HPFAR_EL2 = RegisterSpec("HPFAR_EL2", (
    F(63, 63, "NS", feature="FEAT_SEL2"), Res0(62, 48), F(47, 4, "FIPA"), Res0(3, 0),
))

ID_AA64MMFR0_EL1 = RegisterSpec("ID_AA64MMFR0_EL1", (
    F(63, 60, "ECV"), F(59, 56, "FGT"), Res0(55, 48), F(47, 44, "ExS"),
    F(43, 40, "TGran4_2"), F(39, 36, "TGran64_2"), F(35, 32, "TGran16_2"),
    F(31, 28, "TGran4", {0: "4KB", 1: "4KB+52-bit", 0xF: "not implemented"}),
    F(27, 24, "TGran64", {0: "64KB", 0xF: "not implemented"}),
    F(23, 20, "TGran16", {0: "not implemented", 1: "16KB", 2: "16KB+52-bit"}),
    F(19, 16, "BigEndEL0"), F(15, 12, "SNSMem"), F(11, 8, "BigEnd"), F(7, 4, "ASIDBits"),
    F(3, 0, "PARange", PS_ENC),
))
ID_AA64MMFR1_EL1 = RegisterSpec("ID_AA64MMFR1_EL1", (
    F(63, 60, "ECBHB"), F(59, 56, "CMOW"), F(55, 52, "TIDCP1"), F(51, 48, "nTLBPA"),
    F(47, 44, "AFP"), F(43, 40, "HCX"), F(39, 36, "ETS"), F(35, 32, "TWED"),
    F(31, 28, "XNX"), F(27, 24, "SpecSEI"),
    F(23, 20, "PAN", {0: "none", 1: "FEAT_PAN", 2: "FEAT_PAN2", 3: "FEAT_PAN3"}),
    F(19, 16, "LO"), F(15, 12, "HPDS"), F(11, 8, "VH"), F(7, 4, "VMIDBits"),
    F(3, 0, "HAFDBS", {0: "none", 1: "access flag", 2: "access flag and dirty state",
                        3: "as 0b0010, and the access flag in table descriptors (FEAT_HAFT)"}),
))
ID_AA64MMFR2_EL1 = RegisterSpec("ID_AA64MMFR2_EL1", (
    F(63, 60, "E0PD"), F(59, 56, "EVT"), F(55, 52, "BBM"), F(51, 48, "TTL"), Res0(47, 44),
    F(43, 40, "FWB"), F(39, 36, "IDS"), F(35, 32, "AT"), F(31, 28, "ST"), F(27, 24, "NV"),
    F(23, 20, "CCIDX"), F(19, 16, "VARange", {0: "48-bit VA", 1: "52-bit VA"}),
    F(15, 12, "IESB"), F(11, 8, "LSM"), F(7, 4, "UAO"), F(3, 0, "CnP"),
))

# FEAT_S1PIE: PIR_ELx / PIRE0_ELx hold sixteen 4-bit stage-1 base permissions, indexed by
# a leaf's PIIndex (Arm ARM PIR_EL1 field descriptions; AArch64.S1IndirectBasePermissions).
PIE_ENC = {
    0b0000: "no access", 0b0001: "R, overlay", 0b0010: "X, overlay", 0b0011: "RX, overlay",
    0b0100: "reserved (no access)", 0b0101: "RW, overlay", 0b0110: "RWX, overlay, WXN",
    0b0111: "RWX, overlay", 0b1000: "R", 0b1001: "R, GCS read", 0b1010: "RX",
    0b1011: "reserved (no access)", 0b1100: "RW", 0b1101: "reserved (no access)",
    0b1110: "RWX", 0b1111: "reserved (no access)",
}
# FEAT_S1POE: POR_ELx hold sixteen 4-bit overlay permissions indexed by POIndex (only
# Perm0..Perm7 are reachable with 64-bit descriptors; Arm ARM POR_EL0 field descriptions).
POE_ENC = {0b0000: "no access", 0b0001: "R", 0b0010: "X", 0b0011: "RX", 0b0100: "W",
           0b0101: "RW", 0b0110: "WX", 0b0111: "RWX",
           **{v: "reserved (no access)" for v in range(8, 16)}}
# FEAT_S2PIE / FEAT_S2POE: S2PIR_EL2 and S2POR_EL1 hold stage-2 permissions (Arm ARM
# S2PIR_EL2 field descriptions). MRO is "mostly read-only"; the -TL variants add the
# FEAT_THE TopLevel checks, which s2mmu does not model.
S2PIE_ENC = {
    0b0000: "no access", 0b0001: "reserved (no access)", 0b0010: "MRO", 0b0011: "MRO-TL1",
    0b0100: "WO", 0b0101: "reserved (no access)", 0b0110: "MRO-TL0", 0b0111: "MRO-TL01",
    0b1000: "RO", 0b1001: "RO+uX", 0b1010: "RO+pX", 0b1011: "RO+puX", 0b1100: "RW",
    0b1101: "RW+uX", 0b1110: "RW+pX", 0b1111: "RW+puX",
}


def _perm_items(enc: dict[int, str], used: int = 16) -> tuple[F, ...]:
    """Return Perm15..Perm0; those from Perm<used> up exist only with FEAT_D128 (POR_ELx:
    a 64-bit descriptor's POIndex is 3 bits, and Perm8..Perm15 are RES0)."""
    return tuple(F(4 * m + 3, 4 * m, f"Perm{m}", enc,
                   feature="FEAT_D128" if m >= used else "") for m in range(15, -1, -1))


PIR_EL1 = RegisterSpec("PIR_EL1", _perm_items(PIE_ENC))
PIRE0_EL1 = RegisterSpec("PIRE0_EL1", _perm_items(PIE_ENC))
PIR_EL2 = RegisterSpec("PIR_EL2", _perm_items(PIE_ENC))
PIRE0_EL2 = RegisterSpec("PIRE0_EL2", _perm_items(PIE_ENC))
POR_EL0 = RegisterSpec("POR_EL0", _perm_items(POE_ENC, used=8))
POR_EL1 = RegisterSpec("POR_EL1", _perm_items(POE_ENC, used=8))
POR_EL2 = RegisterSpec("POR_EL2", _perm_items(POE_ENC, used=8))
S2PIR_EL2 = RegisterSpec("S2PIR_EL2", _perm_items(S2PIE_ENC))
S2POR_EL1 = RegisterSpec("S2POR_EL1", _perm_items(S2PIE_ENC))

# TCR2_ELx (FEAT_TCR2): the extended stage-1 controls. With HCR_EL2.E2H=0, TCR2_EL2's
# EL0 controls (E0POE and the second-range bits) are RES0; the walk reads them only for
# the EL2&0 regime, so one declaration serves both.
_TCR2_ITEMS = (
    Res0(63, 22), F(21, 21, "FNGNA1", feature="FEAT_ASID2"),
    F(20, 20, "FNGNA0", feature="FEAT_ASID2"), Res0(19, 19),
    F(18, 18, "FNG1", feature="FEAT_ASID2"), F(17, 17, "FNG0", feature="FEAT_ASID2"),
    F(16, 16, "A2", feature="FEAT_ASID2"), F(15, 15, "DisCH1", feature="FEAT_D128"),
    F(14, 14, "DisCH0", feature="FEAT_D128"), Res0(13, 12),
    F(11, 11, "HAFT", feature="FEAT_HAFT"), F(10, 10, "PTTWI", feature="FEAT_THE"),
    Res0(9, 6), F(5, 5, "D128", feature="FEAT_D128"), F(4, 4, "AIE", feature="FEAT_AIE"),
    F(3, 3, "POE", {0: "no privileged permission overlay",
                    1: "privileged permission overlay (POR_ELx) enabled"}, feature="FEAT_S1POE"),
    F(2, 2, "E0POE", {0: "no EL0 permission overlay",
                      1: "EL0 permission overlay (POR_EL0) enabled"}, feature="FEAT_S1POE"),
    F(1, 1, "PIE", {0: "direct permissions (AP, PXN, UXN)",
                    1: "indirect permissions (PIR_ELx/PIRE0_ELx by PIIndex)"},
      feature="FEAT_S1PIE"),
    F(0, 0, "PnCH", feature="FEAT_THE"),
)
TCR2_EL1 = RegisterSpec("TCR2_EL1", _TCR2_ITEMS)
TCR2_EL2 = RegisterSpec("TCR2_EL2", _TCR2_ITEMS)

ID_AA64MMFR3_EL1 = RegisterSpec("ID_AA64MMFR3_EL1", (
    F(63, 60, "Spec_FPACC"), F(59, 56, "ADERR"), F(55, 52, "SDERR"), Res0(51, 48),
    F(47, 44, "ANERR"), F(43, 40, "SNERR"), F(39, 36, "D128_2"), F(35, 32, "D128"),
    F(31, 28, "MEC"), F(27, 24, "AIE"),
    F(23, 20, "S2POE", {0: "not implemented", 1: "FEAT_S2POE"}),
    F(19, 16, "S1POE", {0: "not implemented", 1: "FEAT_S1POE"}),
    F(15, 12, "S2PIE", {0: "not implemented", 1: "FEAT_S2PIE"}),
    F(11, 8, "S1PIE", {0: "not implemented", 1: "FEAT_S1PIE"}),
    F(7, 4, "SCTLRX"), F(3, 0, "TCRX", {0: "not implemented", 1: "FEAT_TCR2"}),
))

REGISTERS: dict[str, RegisterSpec] = {
    spec_name: spec
    for spec_name, spec in {
        "SCTLR_EL1": SCTLR_EL1, "SCTLR_EL2": SCTLR_EL2, "TCR_EL1": TCR_EL1,
        "TCR_EL2": TCR_EL2_E2H0, "TCR_EL2_E2H1": TCR_EL2_E2H1, "VTCR_EL2": VTCR_EL2,
        "TTBR0_EL1": TTBR0_EL1, "TTBR1_EL1": TTBR1_EL1, "TTBR0_EL2": TTBR0_EL2,
        "TTBR1_EL2": TTBR1_EL2, "VTTBR_EL2": VTTBR_EL2, "MAIR_EL1": MAIR_EL1,
        "MAIR_EL2": MAIR_EL2, "AMAIR_EL1": AMAIR_EL1, "CONTEXTIDR_EL1": CONTEXTIDR_EL1,
        "CONTEXTIDR_EL2": CONTEXTIDR_EL2, "HCR_EL2": HCR_EL2, "HCRX_EL2": HCRX_EL2,
        "PAR_EL1": PAR_EL1_OK, "ESR_EL1": ESR_ELx, "ESR_EL2": ESR_ELx, "FAR_EL1": FAR_ELx,
        "FAR_EL2": FAR_ELx, "HPFAR_EL2": HPFAR_EL2, "ID_AA64MMFR0_EL1": ID_AA64MMFR0_EL1,
        "ID_AA64MMFR1_EL1": ID_AA64MMFR1_EL1, "ID_AA64MMFR2_EL1": ID_AA64MMFR2_EL1,
        "ID_AA64MMFR3_EL1": ID_AA64MMFR3_EL1, "TCR2_EL1": TCR2_EL1, "TCR2_EL2": TCR2_EL2,
        "PIR_EL1": PIR_EL1, "PIRE0_EL1": PIRE0_EL1, "PIR_EL2": PIR_EL2,
        "PIRE0_EL2": PIRE0_EL2, "POR_EL0": POR_EL0, "POR_EL1": POR_EL1,
        "POR_EL2": POR_EL2, "S2PIR_EL2": S2PIR_EL2, "S2POR_EL1": S2POR_EL1,
    }.items()
}
