"""Real KVM as the oracle: a scenario run by KVM/arm64 itself and compared with the model.

The scenario becomes a plan (:mod:`s2mmu.real.plan`) for the project's own VMM
(csrc/vmm.c, static arm64), which runs as /init of an initramfs booted with Debian's arm64
kernel under QEMU TCG, KVM at EL2 in VHE, nVHE or protected mode
(:mod:`s2mmu.real.boot`). What KVM did, read from the VMM's records and the kvm
tracepoints (:mod:`s2mmu.real.log`), and the stage 2 after chosen steps, read through
QEMU's gdbstub (:mod:`s2mmu.real.gdb`), are compared step by step with the model's run of
the same scenario (:mod:`s2mmu.real.diff`).
"""
