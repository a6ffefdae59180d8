"""ctypes binding of the AT library `build` makes: the kernel's at.c behind a flat API.

The library holds one vCPU (the glue's state is global). Before each AT instruction the
harness loads L1's registers and PSTATE.PAN and installs three callbacks that answer
from s2mmu: guest memory (kvm_read_guest), L1's stage 2 (kvm_walk_nested_s2) and the
VM's ID-register features (kvm_has_feat, asked by register, field and value name).

Kernel: arch/arm64/kvm/at.c (6.12): __kvm_at_s1e01, __kvm_at_s1e2, __kvm_at_s12.
"""

from __future__ import annotations

import ctypes as C
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from s2mmu.arch.at import AtOp

U64 = C.c_uint64

# at_shim.h's enum kat_sysreg, in order.
SYSREGS = ("HCR_EL2", "SCTLR_EL1", "TCR_EL1", "TTBR0_EL1", "TTBR1_EL1", "MAIR_EL1",
           "SCTLR_EL2", "TCR_EL2", "TTBR0_EL2", "TTBR1_EL2", "MAIR_EL2", "PAR_EL1",
           "VTCR_EL2", "VTTBR_EL2")

# at_glue.c's ops[], in order.
GLUE_OPS = (AtOp.S1E1R, AtOp.S1E1W, AtOp.S1E0R, AtOp.S1E0W, AtOp.S1E1RP, AtOp.S1E1WP,
            AtOp.S1E1A, AtOp.S1E2R, AtOp.S1E2W, AtOp.S1E2A, AtOp.S12E1R, AtOp.S12E1W,
            AtOp.S12E0R, AtOp.S12E0W)

EFAULT = 14


class S2Trans(C.Structure):
    """at_shim.h's struct kvm_s2_trans (nested.c's result of an L1 stage-2 walk)."""

    _fields_ = [("output", U64), ("block_size", C.c_ulong), ("writable", C.c_bool),
                ("readable", C.c_bool), ("level", C.c_int), ("esr", C.c_uint32),
                ("desc", U64)]


READ_CB = C.CFUNCTYPE(C.c_int, U64, C.POINTER(U64))
WALK_CB = C.CFUNCTYPE(C.c_int, U64, C.POINTER(S2Trans))
FEAT_CB = C.CFUNCTYPE(C.c_int, C.c_char_p, C.c_char_p, C.c_char_p, C.c_int)


@dataclass(frozen=True)
class S2Answer:
    """What kvm_walk_nested_s2 returns to at.c: its return value and result fields."""

    ret: int
    output: int = 0
    block_size: int = 0
    readable: bool = False
    writable: bool = False
    level: int = 0
    esr: int = 0
    desc: int = 0


@dataclass(frozen=True)
class GuestCallbacks:
    """How the kernel's at.c sees the VM: guest memory, L1's stage 2, the VM's features.

    read returns the little-endian word at a guest PA, or None when kvm_read_guest fails;
    has_feat takes (ID register, field, value, exact) as kvm_has_feat(_enum) names them.
    """

    read: Callable[[int], int | None]
    walk_s2: Callable[[int], S2Answer]
    has_feat: Callable[[str, str, str, bool], bool]


class KernelAt:
    """The kernel's AT emulation, loaded from a built library."""

    def __init__(self, library: Path) -> None:
        self.lib = C.CDLL(str(library))
        sigs: dict[str, tuple[list[type], type | None]] = {
            "kat_set_callbacks": ([READ_CB, WALK_CB, FEAT_CB], None),
            "kat_set_limits": ([C.c_uint, C.c_uint], None),
            "kat_set_reg": ([C.c_int, U64], None),
            "kat_get_reg": ([C.c_int], U64),
            "kat_set_pstate_pan": ([C.c_int], None),
            "kat_nwarn": ([], C.c_int),
            "kat_nops": ([], C.c_int),
            "kat_op": ([C.c_int], C.c_uint32),
            "kat_at": ([C.c_uint32, U64], U64),
        }
        for name, (args, res) in sigs.items():
            fn = getattr(self.lib, name)
            fn.argtypes = args
            fn.restype = res
        n = int(self.lib.kat_nops())
        if n != len(GLUE_OPS):
            raise RuntimeError(f"AT library has {n} operations, the binding {len(GLUE_OPS)}")
        self.encodings = {op: int(self.lib.kat_op(i)) for i, op in enumerate(GLUE_OPS)}
        """The kernel's OP_AT_* encoding of each AT instruction (asm/sysreg.h)."""
        self._keep: tuple[object, ...] = ()
        self.errors: list[str] = []
        """Exceptions a callback raised (a harness bug), in order."""

    def set_guest(self, cb: GuestCallbacks, pa_bits: int, ipa_limit: int) -> None:
        """Install the callbacks and the VM's PA size and KVM's IPA limit."""

        def read(gpa: int, out: C._Pointer[C.c_uint64]) -> int:
            try:
                v = cb.read(int(gpa))
            except Exception as e:  # noqa: BLE001 - ctypes would swallow it
                self.errors.append(f"read {gpa:#x}: {e!r}")
                return -EFAULT
            if v is None:
                return -EFAULT
            out[0] = v
            return 0

        def walk(ipa: int, out: C._Pointer[S2Trans]) -> int:
            try:
                a = cb.walk_s2(int(ipa))
            except Exception as e:  # noqa: BLE001
                self.errors.append(f"walk {ipa:#x}: {e!r}")
                return -EFAULT
            t = out[0]
            t.output, t.block_size, t.readable, t.writable = (a.output, a.block_size,
                                                               a.readable, a.writable)
            t.level, t.esr, t.desc = a.level, a.esr, a.desc
            return a.ret

        def feat(reg: bytes, field: bytes, limit: bytes, exact: int) -> int:
            try:
                return int(cb.has_feat(reg.decode(), field.decode(), limit.decode(),
                                       bool(exact)))
            except Exception as e:  # noqa: BLE001
                self.errors.append(f"kvm_has_feat {reg!r} {field!r} {limit!r}: {e!r}")
                return 0

        keep = (READ_CB(read), WALK_CB(walk), FEAT_CB(feat))
        self._keep = keep
        self.lib.kat_set_callbacks(*keep)
        self.lib.kat_set_limits(pa_bits, ipa_limit)

    def set_regs(self, regs: dict[str, int], pan: bool) -> None:
        """Load L1's registers (SYSREGS names; others read as 0) and PSTATE.PAN."""
        for i, name in enumerate(SYSREGS):
            self.lib.kat_set_reg(i, regs.get(name, 0))
        self.lib.kat_set_pstate_pan(int(pan))

    def at(self, op: AtOp, va: int) -> int:
        """Run the kernel's emulation of op on va; return the PAR_EL1 it leaves."""
        return int(self.lib.kat_at(self.encodings[op], va))

    def warnings(self) -> int:
        """Return how many WARN_ON_ONCE at.c has hit."""
        return int(self.lib.kat_nwarn())
