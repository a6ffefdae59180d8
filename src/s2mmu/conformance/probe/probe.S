// The s2mmu conformance probe: EL3 main loop.
//
// Boots at EL3 (QEMU virt with secure=on starts a non-Linux ELF at the highest EL),
// reads the case blob at BLOB_ADDR, and for each case:
//   1. zeroes the words the previous case wrote (memory not given reads as zero),
//   2. writes the case's memory words and system registers, invalidates all TLBs,
//   3. runs the prechecks (AT at EL3 on the stub page's addresses, so that an op never
//      erets into code it cannot fetch),
//   4. runs each op: at EL3 directly, at EL2 or EL1 by eret into the stub page; every
//      way back is an SMC (or an exception) into vectors_el3,
//   5. after each op compares every case word with its shadow copy and records the
//      words the translation hardware changed (access flag and dirty state updates),
//   6. writes the case's result record to the output file with one semihosting call.
// At the end it exits QEMU through semihosting SYS_EXIT.
//
// Register use inside run_case (callee-saved across run_op):
//   x19 case, x20 nwords, x21 nops, x22 nprechecks, x23 prechecks, x24 words,
//   x25 ops, x26 result record, x27 nchanges, x28 next change slot.

    .arch armv8.6-a
    .include "layout.inc"

    .global _start, vectors_el3, BLOB_ADDR_SYM, RESULT_BUF_SYM, STUB_PA_SYM
    .set BLOB_ADDR_SYM, BLOB_ADDR
    .set RESULT_BUF_SYM, RESULT_BUF
    .set STUB_PA_SYM, STUB_PA

    // SCR_EL3: NS, RES1 [5:4], HCE (HVC enabled), RW (EL2 AArch64), HXEn (HCRX_EL2).
    .equ SCR_VALUE, (1 << 0) | (3 << 4) | (1 << 8) | (1 << 10) | (1 << 38)
    // SCTLR_EL3: RES1 bits only: MMU, caches and alignment checks off, little-endian.
    .equ SCTLR_EL3_VALUE, 0x30c50830
    .equ SYS_OPEN, 0x01
    .equ SYS_WRITE, 0x05
    .equ SYS_EXIT, 0x18

    .section .text.boot, "ax"
_start:
    ldr x0, =STACK_TOP
    mov sp, x0
    ldr x0, =vectors_el3
    msr vbar_el3, x0
    ldr x0, =SCR_VALUE
    msr scr_el3, x0
    ldr x0, =SCTLR_EL3_VALUE
    msr sctlr_el3, x0
    msr cptr_el3, xzr
    isb
    bl main
    mov x0, #0
    b exit

    .text
// Exit QEMU with status x0.
exit:
    adr x1, sh_exit_block
    str x0, [x1, #8]
    ldr x9, =0x20026                // ADP_Stopped_ApplicationExit
    str x9, [x1]
    mov x0, #SYS_EXIT
    hlt #0xf000
1:  b 1b

// Semihosting call: x0 = operation, x1 = parameter block; returns x0.
semihost:
    hlt #0xf000
    ret

main:
    stp x29, x30, [sp, #-64]!
    stp x19, x20, [sp, #16]
    stp x21, x22, [sp, #32]
    ldr x19, =BLOB_ADDR
    ldr x0, [x19]
    ldr x1, =(BLOB_MAGIC_HI << 32) | BLOB_MAGIC_LO
    cmp x0, x1
    b.eq 1f
    mov x0, #2                      // no blob: exit status 2
    b exit
1:  // Open the output file ("wb").
    adr x1, sh_block
    ldr x0, [x19, #BH_PATH]
    add x0, x19, x0
    str x0, [x1]
    mov x0, #5
    str x0, [x1, #8]
    ldr x0, [x19, #BH_PATHLEN]
    str x0, [x1, #16]
    mov x0, #SYS_OPEN
    bl semihost
    cmn x0, #1
    b.ne 2f
    mov x0, #3                      // cannot open the output: exit status 3
    b exit
2:  adr x1, out_handle
    str x0, [x1]
    ldr x20, [x19, #BH_NCASES]
    ldr x21, [x19, #BH_FIRST]
    add x21, x19, x21               // current case
    mov x22, xzr                    // previous case
3:  cbz x20, 4f
    bl clear_stored
    mov x0, x22
    bl clear_case
    mov x0, x21
    bl run_case
    bl write_result
    mov x22, x21
    ldr x9, [x21, #C_SIZE]
    add x21, x21, x9
    sub x20, x20, #1
    b 3b
4:  mov x0, x22
    bl clear_case
    ldp x19, x20, [sp, #16]
    ldp x21, x22, [sp, #32]
    ldp x29, x30, [sp], #64
    ret

// After op entry x10 returned kind x0: if it is a completed STR, find the PA it wrote
// (AT S12E0W/S12E1W/S1E2W at EL3 for the EL it ran at) and remember it, so that the next
// case starts from memory reading zero there. Keeps x0..x5 (the op record).
note_store:
    ldr x11, [x10]                  // code
    cmp x11, #OP_STR
    b.eq 5f
    cmp x11, #OP_STXR
    b.lo 3f
5:  cmp x0, #KIND_ACCESS
    b.ne 3f
    ldp x11, x12, [x10, #8]         // el, pan
    ldr x12, [x10, #24]             // va
    cmp x11, #1
    b.eq 1f
    b.hi 2f
    at s12e0w, x12
    b 4f
1:  at s12e1w, x12
    b 4f
2:  at s1e2w, x12
4:  isb
    mrs x13, par_el1
    tbnz x13, #0, 3f
    and x13, x13, #0x000ffffffffff000
    and x17, x12, #7                // an unaligned store also writes the next word
    and x12, x12, #0xff8
    orr x13, x13, x12
    adr x14, n_stored
    ldr x15, [x14]
    ldr x16, =STORED_BUF
    add x16, x16, x15, lsl #3
    ldr x12, =STORED_END - 8
    cmp x16, x12
    b.hs 3f
    str x13, [x16]
    add x15, x15, #1
    cbz x17, 6f
    add x13, x13, #8
    str x13, [x16, #8]
    add x15, x15, #1
6:  str x15, [x14]
3:  ret

// Zero the words the previous case's stores wrote.
clear_stored:
    adr x9, n_stored
    ldr x10, [x9]
    ldr x11, =STORED_BUF
1:  cbz x10, 2f
    ldr x12, [x11], #8
    str xzr, [x12]
    sub x10, x10, #1
    b 1b
2:  str xzr, [x9]
    dsb sy
    ret

// Zero every memory word of case x0 (nothing if x0 is 0).
clear_case:
    cbz x0, 2f
    ldr x9, [x0, #C_NWORDS]
    ldr x10, [x0, #C_NPRE]
    add x11, x0, #C_HDR_SIZE
    mov x12, #24
    madd x11, x10, x12, x11         // first word entry
1:  cbz x9, 2f
    ldr x12, [x11], #16
    str xzr, [x12]
    sub x9, x9, #1
    b 1b
2:  dsb sy
    ret

// Write the result record of the current case with one SYS_WRITE.
write_result:
    stp x29, x30, [sp, #-16]!
    ldr x9, =RESULT_BUF
    ldr x10, [x9, #16]              // nops
    ldr x11, [x9, #24]              // nchanges
    mov x12, #R_HDR_SIZE
    mov x13, #R_OP_SIZE
    madd x12, x10, x13, x12
    lsl x11, x11, #5                // R_CHANGE_SIZE = 32
    add x12, x12, x11
    adr x1, sh_block
    adr x0, out_handle
    ldr x0, [x0]
    stp x0, x9, [x1]
    str x12, [x1, #16]
    mov x0, #SYS_WRITE
    bl semihost
    ldp x29, x30, [sp], #16
    ret

// Write the case's registers (at EL3 no E2H redirection applies).
load_regs:
    add x9, x0, #C_REGS
    ldp x10, x11, [x9], #16
    msr sctlr_el1, x10
    msr tcr_el1, x11
    ldp x10, x11, [x9], #16
    msr mair_el1, x10
    msr ttbr0_el1, x11
    ldp x10, x11, [x9], #16
    msr ttbr1_el1, x10
    msr amair_el1, x11
    ldp x10, x11, [x9], #16
    msr contextidr_el1, x10
    msr hcr_el2, x11
    ldp x10, x11, [x9], #16
    msr vtcr_el2, x10
    msr vttbr_el2, x11
    ldp x10, x11, [x9], #16
    msr sctlr_el2, x10
    msr tcr_el2, x11
    ldp x10, x11, [x9], #16
    msr ttbr0_el2, x10
    msr ttbr1_el2, x11
    ldp x10, x11, [x9], #16
    msr mair_el2, x10
    msr contextidr_el2, x11
    ldr x10, [x9]
    msr s3_4_c1_c2_2, x10           // HCRX_EL2
    ret

// Run one case (x0).
run_case:
    stp x29, x30, [sp, #-96]!
    stp x19, x20, [sp, #16]
    stp x21, x22, [sp, #32]
    stp x23, x24, [sp, #48]
    stp x25, x26, [sp, #64]
    stp x27, x28, [sp, #80]
    mov x19, x0
    ldr x20, [x19, #C_NWORDS]
    ldr x21, [x19, #C_NOPS]
    ldr x22, [x19, #C_NPRE]
    add x23, x19, #C_HDR_SIZE
    mov x9, #24
    madd x24, x22, x9, x23
    add x25, x24, x20, lsl #4
    // Memory.
    mov x9, x20
    mov x10, x24
1:  cbz x9, 2f
    ldp x11, x12, [x10], #16
    str x12, [x11]
    sub x9, x9, #1
    b 1b
2:  dsb sy
    // Registers, vector bases, TLBs.
    mov x0, x19
    bl load_regs
    ldr x0, [x19, #C_STUB_EL1]
    msr vbar_el1, x0
    ldr x0, [x19, #C_STUB_EL2]
    add x0, x0, #STUB_AT_EL2
    msr vbar_el2, x0
    dsb sy
    tlbi alle3
    tlbi alle2
    tlbi alle1
    dsb sy
    isb
    // Result header.
    ldr x26, =RESULT_BUF
    ldr x9, =R_MAGIC
    ldr x10, [x19, #C_INDEX]
    stp x9, x10, [x26]
    stp x21, xzr, [x26, #16]
    stp xzr, xzr, [x26, #32]
    str xzr, [x26, #72]
    mov x27, xzr
    mov x9, #R_OP_SIZE
    mul x9, x21, x9
    add x28, x26, #R_HDR_SIZE
    add x28, x28, x9
    // Prechecks: AT at EL3 on each stub address; PAR.F must be 0 and PA the stub's.
    mov x9, xzr                     // index
3:  cmp x9, x22
    b.hs 5f
    stp x9, xzr, [sp, #-16]!
    mov x10, #24
    madd x10, x9, x10, x23
    ldp x0, x2, [x10]               // op code, va
    mov x1, #3
    mov x3, xzr
    mov x4, x19
    bl run_op
    ldp x9, xzr, [sp], #16
    mov x10, #24
    madd x10, x9, x10, x23
    ldr x11, [x10, #16]             // expected PA
    and x12, x1, #0x000ffffffffff000
    tbnz x1, #0, 4f
    cmp x0, #KIND_PAR
    b.ne 4f
    cmp x12, x11
    b.ne 4f
    add x9, x9, #1
    b 3b
4:  add x9, x9, #1
    stp x9, x1, [x26, #32]          // failed precheck (1-based) and its PAR
5:  mov x0, #-1
    bl scan_changes
    // Ops, timed with the generic timer.
    isb
    mrs x9, cntpct_el0
    str x9, [x26, #48]
    mov x9, xzr
6:  cmp x9, x21
    b.hs 9f
    stp x9, xzr, [sp, #-16]!
    add x10, x25, x9, lsl #OP_ENTRY_SHIFT // op entry: code, el, pan, va, value
    ldp x0, x1, [x10]
    ldp x3, x2, [x10, #16]
    ldr x6, [x10, #32]
    cmp x1, #3
    b.eq 7f
    ldr x11, [x26, #32]
    cbz x11, 7f
    mov x0, #KIND_NO_STUB           // the stub page is unreachable: do not eret
    mov x1, xzr
    b 8f
7:  mov x4, x19
    bl run_op
    ldr x9, [sp]
    add x10, x25, x9, lsl #OP_ENTRY_SHIFT
    bl note_store
8:  ldp x9, xzr, [sp], #16
    mov x10, #R_OP_SIZE
    madd x10, x9, x10, x26
    add x10, x10, #R_HDR_SIZE
    stp x0, x1, [x10]
    stp x3, x4, [x10, #16]
    stp x5, xzr, [x10, #32]
    stp x9, xzr, [sp, #-16]!
    mov x0, x9
    bl scan_changes
    ldp x9, xzr, [sp], #16
    add x9, x9, #1
    b 6b
9:  isb
    mrs x9, cntpct_el0
    mrs x10, cntfrq_el0
    stp x9, x10, [x26, #56]
    str x27, [x26, #24]
    ldp x19, x20, [sp, #16]
    ldp x21, x22, [sp, #32]
    ldp x23, x24, [sp, #48]
    ldp x25, x26, [sp, #64]
    ldp x27, x28, [sp, #80]
    ldp x29, x30, [sp], #96
    ret

// Record every case word that differs from its shadow, attributed to op x0 (-1: the
// prechecks), and update the shadow. Uses run_case's x19, x20, x24, x27, x28. Skipped
// when the case cannot update descriptors (no HA/HD anywhere: C_FLAGS bit 0 clear).
scan_changes:
    ldr x9, [x19, #C_FLAGS]
    tbz x9, #0, 3f
    mov x9, x20
    mov x10, x24
1:  cbz x9, 3f
    ldp x11, x12, [x10]             // pa, shadow
    ldr x13, [x11]
    cmp x13, x12
    b.eq 2f
    str x13, [x10, #8]
    ldr x14, =RESULT_END - R_CHANGE_SIZE
    cmp x28, x14
    b.ls 4f
    ldr x14, [x26, #72]             // no room: count the change as dropped
    add x14, x14, #1
    str x14, [x26, #72]
    b 2f
4:  stp x0, x11, [x28], #16
    stp x12, x13, [x28], #16
    add x27, x27, #1
2:  add x10, x10, #16
    sub x9, x9, #1
    b 1b
3:  ret

// Execute op x0 at EL x1 with PSTATE.PAN x3 on address x2 (x6: a store's value), for case x4.
// Returns x0 = kind, x1..x5 = values (layout.inc). Exceptions come back through
// vectors_el3, which unwinds to op_return with the stack saved here.
run_op:
    stp x29, x30, [sp, #-96]!
    stp x19, x20, [sp, #16]
    stp x21, x22, [sp, #32]
    stp x23, x24, [sp, #48]
    stp x25, x26, [sp, #64]
    stp x27, x28, [sp, #80]
    adr x9, saved_sp
    mov x10, sp
    str x10, [x9]
    cmp x1, #3
    b.eq 3f
    cbz x1, 5f
    cmp x1, #2
    b.eq 1f
    ldr x9, [x4, #C_STUB_EL1]       // EL1h, DAIF masked
    add x9, x9, #STUB_AT_EL1
    mov x10, #0x3c5
    b 2f
1:  ldr x9, [x4, #C_STUB_EL2]       // EL2h, DAIF masked
    add x9, x9, #STUB_AT_EL2
    mov x10, #0x3c9
    b 2f
5:  mrs x9, hcr_el2                 // EL0t, DAIF masked: the EL0 table of the stub page
    ubfx x10, x9, #34, #1           // mapped for EL1, or for EL2 with E2H=TGE=1
    ubfx x11, x9, #27, #1
    and x10, x10, x11
    ldr x9, [x4, #C_STUB_EL1]
    cbz x10, 6f
    ldr x9, [x4, #C_STUB_EL2]
6:  add x9, x9, #STUB_EL0
    sub x0, x0, #OP_FIRST_ACCESS
    mov x10, #0x3c0
2:  add x9, x9, x0, lsl #3
    orr x10, x10, x3, lsl #22       // SPSR.PAN
    mov x4, x6                      // the value STR X4, [X2] writes
    mov x1, xzr                     // what CAS X1, X4, [X2] compares with
    mov x5, xzr
    msr elr_el3, x9
    msr spsr_el3, x10
    isb
    eret
3:  cbz x3, 4f
    msr pan, #1
4:  adr x9, at_table_el3
    add x9, x9, x0, lsl #3
    br x9

at_table_el3:
    at s1e0r, x2
    b el3_done
    at s1e0w, x2
    b el3_done
    at s1e1r, x2
    b el3_done
    at s1e1w, x2
    b el3_done
    at s1e1rp, x2
    b el3_done
    at s1e1wp, x2
    b el3_done
    at s1e2r, x2
    b el3_done
    at s1e2w, x2
    b el3_done
    at s12e0r, x2
    b el3_done
    at s12e0w, x2
    b el3_done
    at s12e1r, x2
    b el3_done
    at s12e1w, x2
    b el3_done
el3_done:
    isb
    mrs x1, par_el1
    mov x0, #KIND_PAR
    mov x3, xzr
    mov x4, xzr
    mov x5, xzr
    // fall through
op_return:
    msr pan, #0
    adr x9, saved_sp
    ldr x10, [x9]
    mov sp, x10
    ldp x19, x20, [sp, #16]
    ldp x21, x22, [sp, #32]
    ldp x23, x24, [sp, #48]
    ldp x25, x26, [sp, #64]
    ldp x27, x28, [sp, #80]
    ldp x29, x30, [sp], #96
    ret

    // An SMC from EL1 or EL2 is a stub reporting back; anything else is unexpected.
lower_sync:
    mrs x9, esr_el3
    ubfx x10, x9, #26, #6
    cmp x10, #0x17
    b.eq op_return
    mov x1, x9
    mrs x5, elr_el3
    mov x0, #KIND_EL3_LOWER
    b op_return

    // An exception at EL3: from an AT of at_table_el3 (an external abort on its walk)
    // it is the op's answer; anywhere else the probe itself is broken.
self_sync:
    mrs x1, esr_el3
    mrs x5, elr_el3
    adr x9, at_table_el3
    sub x10, x5, x9
    cmp x10, #(el3_done - at_table_el3)
    b.hs 1f
    mrs x3, far_el3
    mov x4, xzr
    mov x0, #KIND_EXC_EL3
    b op_return
1:  mov x0, #KIND_EL3_SELF
    b op_return

    .macro el3_async offset
    mov x1, #\offset
    mrs x5, elr_el3
    mov x0, #KIND_ASYNC
    b op_return
    .endm

    .section .vectors_el3, "ax"
    .balign 2048
vectors_el3:
    .org 0x000
    b self_sync
    .org 0x080
    el3_async 0x080
    .org 0x100
    el3_async 0x100
    .org 0x180
    el3_async 0x180
    .org 0x200
    b self_sync
    .org 0x280
    el3_async 0x280
    .org 0x300
    el3_async 0x300
    .org 0x380
    el3_async 0x380
    .org 0x400
    b lower_sync
    .org 0x480
    el3_async 0x480
    .org 0x500
    el3_async 0x500
    .org 0x580
    el3_async 0x580
    .org 0x600
    b lower_sync
    .org 0x680
    el3_async 0x680
    .org 0x700
    el3_async 0x700
    .org 0x780
    el3_async 0x780

    .data
    .balign 8
saved_sp:       .quad 0
n_stored:       .quad 0
out_handle:     .quad 0
sh_block:       .quad 0, 0, 0
sh_exit_block:  .quad 0, 0
