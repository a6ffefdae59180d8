// The s2mmu ID-register probe: report what QEMU's `-cpu max` implements.
//
// Boots at EL3 (QEMU virt, secure=on), reads the ID registers below with MRS (their
// generic S3_<op1>_C<n>_C<m>_<op2> names, so that binutils need not know them), and
// writes them, after a magic word, to the semihosting console (":tt", QEMU's stdout)
// with one SYS_WRITE; then exits through SYS_EXIT. cpu_id.py reads the record; the order
// of the registers is cpu_id.ID_REGISTERS.

    .equ SYS_OPEN, 0x01
    .equ SYS_WRITE, 0x05
    .equ SYS_EXIT, 0x18
    .equ NREGS, 11

    .macro idreg name
    mrs x0, \name
    str x0, [x1], #8
    .endm

    .text
    .global _start
_start:
    adr x1, record
    ldr x0, =0x5344494d4d533253      // the record's magic (cpu_id.MAGIC)
    str x0, [x1], #8
    mov x0, #NREGS
    str x0, [x1], #8
    idreg s3_0_c0_c4_0               // ID_AA64PFR0_EL1
    idreg s3_0_c0_c4_1               // ID_AA64PFR1_EL1
    idreg s3_0_c0_c6_0               // ID_AA64ISAR0_EL1
    idreg s3_0_c0_c6_1               // ID_AA64ISAR1_EL1
    idreg s3_0_c0_c6_2               // ID_AA64ISAR2_EL1
    idreg s3_0_c0_c7_0               // ID_AA64MMFR0_EL1
    idreg s3_0_c0_c7_1               // ID_AA64MMFR1_EL1
    idreg s3_0_c0_c7_2               // ID_AA64MMFR2_EL1
    idreg s3_0_c0_c7_3               // ID_AA64MMFR3_EL1
    idreg s3_0_c0_c7_4               // ID_AA64MMFR4_EL1
    idreg s3_3_c0_c0_1               // CTR_EL0
    mov x0, #SYS_OPEN
    adr x1, open_args
    hlt #0xf000
    adr x1, write_args
    str x0, [x1]
    mov x0, #SYS_WRITE
    hlt #0xf000
    mov x0, #SYS_EXIT
    adr x1, exit_args
    hlt #0xf000
1:  wfi
    b 1b

    .balign 8
open_args:  .quad console, 4, 3              // ":tt", mode "w", length 3
write_args: .quad 0, record, (2 + NREGS) * 8
exit_args:  .quad 0x20026, 0                 // ADP_Stopped_ApplicationExit, status 0
console:    .asciz ":tt"
    .balign 8
record:     .fill 2 + NREGS, 8, 0
    .ltorg
