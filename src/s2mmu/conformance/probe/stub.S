// The stub page: the only probe code that runs at EL1 and EL2.
//
// One 4 KiB page, position independent, so that a case can map it at any virtual (and
// intermediate physical) address with a single leaf descriptor in any granule. It holds
// the EL1 vector table (offset 0x000) and the EL2 vector table (offset 0x800). Each AT
// table lives in the "current EL with SP0" slots of its vector table, which are never
// taken because EL1 and EL2 always run on SP_ELx (SPSR.M = ELxh).
//
// Contract with EL3 (probe.S): EL3 erets to an AT table entry with x2 = the address to
// translate (or access; x4 = the value a store writes); every path back to EL3 is an SMC with x0 = kind and x1..x5 the values (see
// layout.inc). The stubs touch no memory, so SCTLR_ELx.EE and the case's data mappings
// cannot disturb them.

    .arch armv8.6-a+lse
    .include "layout.inc"

    .section .stub, "ax"
    .global stub_base, at_table_el1, at_table_el2, vectors_el1, vectors_el2, el0_table
    .global el1_stxr, el2_stxr, el0_stxr

    .macro at_table done, adone, stxr
    at s1e0r, x2
    b \done
    at s1e0w, x2
    b \done
    at s1e1r, x2
    b \done
    at s1e1w, x2
    b \done
    at s1e1rp, x2
    b \done
    at s1e1wp, x2
    b \done
    at s1e2r, x2
    b \done
    at s1e2w, x2
    b \done
    at s12e0r, x2
    b \done
    at s12e0w, x2
    b \done
    at s12e1r, x2
    b \done
    at s12e1w, x2
    b \done
    ldr x1, [x2]                    // 12: LDR X1, [X2]
    b \adone
    str x4, [x2]                    // 13: STR X4, [X2]
    b \adone
    br x2                           // 14: the fetch at X2 (memory reading zero is UDF #0)
    b \adone
    ldxr x1, [x2]                   // 15: LDXR X1, [X2]
    b \adone
    ldaxr x1, [x2]                  // 16: LDAXR X1, [X2]
    b \adone
    b \stxr                         // 17: LDXR X1, [X2]; STXR W5, X4, [X2]
    b \adone
    ldadd x4, x1, [x2]              // 18: LDADD X4, X1, [X2]
    b \adone
    swp x4, x1, [x2]                // 19: SWP X4, X1, [X2]
    b \adone
    cas x1, x4, [x2]                // 20: CAS X1, X4, [X2] (EL3 erets with X1 = 0)
    b \adone
    .endm

    // The store-exclusive after the load-exclusive that arms the monitor.
    .macro stxr_seq adone
    ldxr x1, [x2]
    stxr w5, x4, [x2]
    b \adone
    .endm

    // An exception nobody expects (interrupt, SError, lower-EL entry at EL1): report
    // the vector offset and return address so the harness can name it.
    .macro unexpected offset, elr
    mov x1, #\offset
    mrs x5, \elr
    mov x0, #KIND_ASYNC
    smc #0
    .endm

stub_base:
vectors_el1:
at_table_el1:                       // 0x000: current EL with SP0, never taken
    at_table el1_done, el1_access_done, el1_stxr
el1_done:
    isb
    mrs x1, par_el1
    mov x0, #KIND_PAR
    smc #0
el1_access_done:
    mov x0, #KIND_ACCESS
    smc #0
    .org STUB_AT_EL1 + STUB_STXR
el1_stxr:
    stxr_seq el1_access_done

    .org STUB_AT_EL1 + STUB_EL0     // the access table run at EL0: reports by SVC
el0_table:
    ldr x1, [x2]                    // LDR X1, [X2]
    b el0_done
    str x4, [x2]                    // STR X4, [X2]
    b el0_done
    br x2                           // the fetch at X2
    b el0_done
    ldxr x1, [x2]
    b el0_done
    ldaxr x1, [x2]
    b el0_done
    b el0_stxr
    b el0_done
    ldadd x4, x1, [x2]
    b el0_done
    swp x4, x1, [x2]
    b el0_done
    cas x1, x4, [x2]
    b el0_done
el0_done:
    mov x0, #KIND_ACCESS
    svc #0
    .org STUB_EL0_STXR
el0_stxr:
    stxr_seq el0_done

    .org STUB_AT_EL1 + 0x200        // current EL with SPx, synchronous: the AT trapped
    mrs x1, esr_el1
    mrs x3, far_el1
    mov x4, xzr
    mrs x5, elr_el1
    mov x0, #KIND_EXC_EL1
    smc #0                          // HCR_EL2.TSC=1 routes this via EL2, which forwards
    .org STUB_AT_EL1 + 0x280
    unexpected 0x280, elr_el1
    .org STUB_AT_EL1 + 0x300
    unexpected 0x300, elr_el1
    .org STUB_AT_EL1 + 0x380
    unexpected 0x380, elr_el1
    .org STUB_AT_EL1 + 0x400        // lower EL (EL0), synchronous: its SVC reports, else
    mrs x9, esr_el1                 // the access's own exception
    ubfx x10, x9, #26, #6
    cmp x10, #0x15
    b.eq 1f
    mov x1, x9
    mrs x3, far_el1
    mov x4, xzr
    mrs x5, elr_el1
    mov x0, #KIND_EXC_EL1
1:  smc #0
    .org STUB_AT_EL1 + 0x480
    unexpected 0x480, elr_el1
    .org STUB_AT_EL1 + 0x500
    unexpected 0x500, elr_el1
    .org STUB_AT_EL1 + 0x580
    unexpected 0x580, elr_el1
    .org STUB_AT_EL1 + 0x600
    unexpected 0x600, elr_el1
    .org STUB_AT_EL1 + 0x680
    unexpected 0x680, elr_el1
    .org STUB_AT_EL1 + 0x700
    unexpected 0x700, elr_el1
    .org STUB_AT_EL1 + 0x780
    unexpected 0x780, elr_el1

    .org STUB_AT_EL2
vectors_el2:
at_table_el2:                       // 0x800: current EL with SP0, never taken
    at_table el2_done, el2_access_done, el2_stxr
el2_done:
    isb
    mrs x1, par_el1
    mov x0, #KIND_PAR
    smc #0
el2_access_done:
    mov x0, #KIND_ACCESS
    smc #0
    .org STUB_AT_EL2 + STUB_STXR
el2_stxr:
    stxr_seq el2_access_done

    // A synchronous exception to EL2, from EL2 itself or from EL1. An SMC from EL1
    // trapped by HCR_EL2.TSC is the EL1 stub reporting: forward its registers.
el2_sync:
    mrs x9, esr_el2
    ubfx x10, x9, #26, #6
    cmp x10, #0x17
    b.eq 1f
    cmp x10, #0x15                  // an SVC from EL0 with HCR_EL2.TGE=1: the EL0 stub
    b.eq 1f
    mov x1, x9
    mrs x3, far_el2
    mrs x4, hpfar_el2
    mrs x5, elr_el2
    mov x0, #KIND_EXC_EL2
1:  smc #0

    .org STUB_AT_EL2 + 0x200        // current EL with SPx, synchronous
    b el2_sync
    .org STUB_AT_EL2 + 0x280
    unexpected 0xa80, elr_el2
    .org STUB_AT_EL2 + 0x300
    unexpected 0xb00, elr_el2
    .org STUB_AT_EL2 + 0x380
    unexpected 0xb80, elr_el2
    .org STUB_AT_EL2 + 0x400        // lower EL using AArch64, synchronous
    b el2_sync
    .org STUB_AT_EL2 + 0x480
    unexpected 0xc80, elr_el2
    .org STUB_AT_EL2 + 0x500
    unexpected 0xd00, elr_el2
    .org STUB_AT_EL2 + 0x580
    unexpected 0xd80, elr_el2
    .org STUB_AT_EL2 + 0x600
    unexpected 0xe00, elr_el2
    .org STUB_AT_EL2 + 0x680
    unexpected 0xe80, elr_el2
    .org STUB_AT_EL2 + 0x700
    unexpected 0xf00, elr_el2
    .org STUB_AT_EL2 + 0x780
    unexpected 0xf80, elr_el2
    .org 0x1000
