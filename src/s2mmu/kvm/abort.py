"""The guest abort as the hardware reported it, and what the guest sees afterwards.

GuestAbort holds ESR_EL2, FAR_EL2 and HPFAR_EL2 exactly as taken to EL2; every fact
about it (is it an instruction abort, a write, on a stage-1 walk, which FSC) is a
function of those values, decoded with s2mmu.arch's register declarations.

Kernel: kvm_vcpu_get_esr, kvm_vcpu_trap_is_iabt, kvm_vcpu_abt_iss1tw,
kvm_vcpu_dabt_iswrite, kvm_vcpu_dabt_is_cm, kvm_vcpu_dabt_isvalid, kvm_vcpu_abt_issea,
kvm_vcpu_trap_get_fault, kvm_vcpu_trap_get_perm_fault_granule, kvm_vcpu_get_fault_ipa,
kvm_vcpu_trap_is_exec_fault (asm/kvm_emulate.h); kvm_is_write_fault (arch/arm64/kvm/mmu.c);
esr_fsc_is_translation_fault and friends (asm/esr.h).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from s2mmu.arch.faults import EC_DABT_CUR, EC_DABT_LOW, EC_IABT_CUR, EC_IABT_LOW, Fault, decode_fsc
from s2mmu.arch.registers import HPFAR_EL2, ESR_ELx, ESR_ELx_DABT, ESR_ELx_IABT
from s2mmu.arch.sysreg import Field


# The fields read on every fault, looked up once from the register declarations, each as
# (lsb, mask) so that a decode is one shift and one AND.
def _shift_mask(f: Field) -> tuple[int, int]:
    return f.lo, (1 << (f.hi - f.lo + 1)) - 1


_EC = _shift_mask(ESR_ELx.field("EC"))
_S1PTW = _shift_mask(ESR_ELx_DABT.field("S1PTW"))
_WNR, _CM, _ISV = (_shift_mask(ESR_ELx_DABT.field(n)) for n in ("WnR", "CM", "ISV"))
_SAS, _SRT = _shift_mask(ESR_ELx_DABT.field("SAS")), _shift_mask(ESR_ELx_DABT.field("SRT"))
_FIPA = _shift_mask(HPFAR_EL2.field("FIPA"))
_XFSC = _shift_mask(ESR_ELx_DABT.field("DFSC"))
assert _shift_mask(ESR_ELx_IABT.field("S1PTW")) == _S1PTW
assert _shift_mask(ESR_ELx_IABT.field("IFSC")) == _XFSC
_FSC_KIND: dict[int, Fault] = {
    code: decoded[0] for code in range(_XFSC[1] + 1) if (decoded := decode_fsc(code)) is not None
}
"""Each xFSC's fault kind, from arch's FSC table (decode_fsc), read once."""


def _get(value: int, f: tuple[int, int]) -> int:
    return (value >> f[0]) & f[1]


@dataclass(frozen=True)
class GuestAbort:
    """A stage-2 abort as the CPU reported it to EL2: ESR_EL2, FAR_EL2, HPFAR_EL2."""

    esr: int
    far: int
    hpfar: int


def esr_ec(abort: GuestAbort) -> int:
    """Return ESR_EL2.EC."""
    return (abort.esr >> _EC[0]) & _EC[1]


def kvm_vcpu_trap_is_iabt(abort: GuestAbort) -> bool:
    """Return whether this is an instruction abort. Kernel: kvm_vcpu_trap_is_iabt."""
    return (abort.esr >> _EC[0]) & _EC[1] in (EC_IABT_LOW, EC_IABT_CUR)


def is_dabt(abort: GuestAbort) -> bool:
    """Return whether this is a data abort."""
    return esr_ec(abort) in (EC_DABT_LOW, EC_DABT_CUR)


def kvm_vcpu_trap_get_fault(abort: GuestAbort) -> int:
    """Return the 6-bit xFSC (DFSC or IFSC, the same bits). Kernel: kvm_vcpu_trap_get_fault."""
    return _get(abort.esr, _XFSC)


def fault_kind(abort: GuestAbort) -> Fault | None:
    """Return the fault kind the xFSC encodes (arch's FSC table), None if it encodes none."""
    return _FSC_KIND.get((abort.esr >> _XFSC[0]) & _XFSC[1])


def fsc_level(fsc: int) -> int:
    """Return the level a level-encoded FSC names, -1 included (arch's FSC table).

    Kernel: the level is esr & ESR_ELx_FSC_LEVEL, with the FEAT_LPA2 level -1 codes apart.
    """
    decoded = decode_fsc(fsc)
    if decoded is None or decoded[1] is None:
        raise ValueError(f"FSC {fsc:#x} does not encode a level")
    return decoded[1]


def esr_fsc_is_translation_fault(abort: GuestAbort) -> bool:
    """Return whether the FSC is a translation fault (levels -1 to 3)."""
    return fault_kind(abort) is Fault.TRANSLATION


def esr_fsc_is_permission_fault(abort: GuestAbort) -> bool:
    """Return whether the FSC is a permission fault (levels 0 to 3)."""
    return fault_kind(abort) is Fault.PERMISSION


def esr_fsc_is_access_flag_fault(abort: GuestAbort) -> bool:
    """Return whether the FSC is an access-flag fault (levels 0 to 3)."""
    return fault_kind(abort) is Fault.ACCESS_FLAG


def kvm_vcpu_abt_issea(abort: GuestAbort) -> bool:
    """Return whether the abort is a synchronous external abort (or parity/ECC error).

    Kernel: kvm_vcpu_abt_issea (EXTABT, SEA_TTW at any level, SECC, SECC_TTW).
    """
    return fault_kind(abort) in (Fault.SYNC_EXTERNAL, Fault.SYNC_EXTERNAL_ON_WALK,
                                 Fault.SYNC_PARITY, Fault.SYNC_PARITY_ON_WALK)


def kvm_vcpu_abt_iss1tw(abort: GuestAbort) -> bool:
    """Return ESR.S1PTW: stage 2 faulted on the guest's stage-1 table walk."""
    return bool(_get(abort.esr, _S1PTW))


def kvm_vcpu_dabt_isvalid(abort: GuestAbort) -> bool:
    """Return ESR.ISV: the instruction syndrome (size, register) is valid."""
    return is_dabt(abort) and bool(_get(abort.esr, _ISV))


def kvm_vcpu_dabt_is_cm(abort: GuestAbort) -> bool:
    """Return ESR.CM: a cache maintenance instruction faulted."""
    return is_dabt(abort) and bool(_get(abort.esr, _CM))


def kvm_vcpu_dabt_iswrite(abort: GuestAbort) -> bool:
    """Return WnR || S1PTW, the kernel's notion of a data-abort write."""
    return bool(_get(abort.esr, _WNR)) or bool(_get(abort.esr, _S1PTW))


def kvm_vcpu_trap_is_permission_fault(abort: GuestAbort) -> bool:
    """Return whether the abort is a permission fault."""
    return esr_fsc_is_permission_fault(abort)


def kvm_is_write_fault(abort: GuestAbort) -> bool:
    """Return whether KVM treats the abort as a write.

    A stage-1 walk is a write only on a permission fault (hardware AF/DBM updates);
    otherwise tables in a read-only memslot would fault forever.

    Kernel: kvm_is_write_fault.
    """
    if kvm_vcpu_abt_iss1tw(abort):
        return kvm_vcpu_trap_is_permission_fault(abort)
    if kvm_vcpu_trap_is_iabt(abort):
        return False
    return kvm_vcpu_dabt_iswrite(abort)


def kvm_vcpu_trap_is_exec_fault(abort: GuestAbort) -> bool:
    """Return whether an instruction fetch faulted (not its stage-1 walk).

    Kernel: kvm_vcpu_trap_is_exec_fault.
    """
    return kvm_vcpu_trap_is_iabt(abort) and not kvm_vcpu_abt_iss1tw(abort)


def kvm_vcpu_get_fault_ipa(abort: GuestAbort) -> int:
    """Return the faulting IPA's page, from HPFAR_EL2.FIPA. Kernel: kvm_vcpu_get_fault_ipa."""
    return _get(abort.hpfar, _FIPA) << 12


def kvm_vcpu_trap_get_perm_fault_granule(abort: GuestAbort) -> int:
    """Return the size of the leaf a permission fault hit, from the FSC's level.

    Kernel: kvm_vcpu_trap_get_perm_fault_granule.
    """
    level = fsc_level(kvm_vcpu_trap_get_fault(abort))
    return 1 << (12 + 9 * (3 - level))


def dabt_access_size(abort: GuestAbort) -> int:
    """Return the access size in bytes from ESR.SAS (valid only with ISV)."""
    return 1 << _get(abort.esr, _SAS)


def dabt_srt(abort: GuestAbort) -> int:
    """Return ESR.SRT, the transfer register (valid only with ISV)."""
    return _get(abort.esr, _SRT)


# -- what the guest (and the VMM) sees -----------------------------------------------------


class ResumeReason(enum.Enum):
    """Why KVM_RUN continues the guest."""

    MAPPED = "mapped"
    """user_mem_abort installed or relaxed a mapping; the access is retried."""
    RETRY = "retry"
    """Nothing was mapped (an invalidation raced, -EAGAIN); the guest retries the access."""
    ACCESS_FLAG = "access-flag"
    """handle_access_fault made the leaf young."""
    SEA_CLAIMED = "sea-claimed"
    """The host's RAS code claimed the external abort (kvm_handle_guest_sea)."""
    CM_SKIPPED = "cm-skipped"
    """Cache maintenance outside memslots: the instruction is skipped (kvm_incr_pc)."""


@dataclass(frozen=True)
class Resumed:
    """KVM_RUN continues the guest (the access is retried, or the instruction skipped)."""

    reason: ResumeReason


@dataclass(frozen=True)
class MmioExit:
    """KVM_EXIT_MMIO: userspace emulates the access. Kernel: io_mem_abort."""

    ipa: int
    length: int
    is_write: bool


@dataclass(frozen=True)
class NisvExit:
    """KVM_EXIT_ARM_NISV: an MMIO access without a valid syndrome, given to userspace."""

    esr_iss: int
    ipa: int


class InjectKind(enum.Enum):
    """The exception KVM injects. Kernel: kvm_inject_dabt, kvm_inject_pabt,
    kvm_inject_size_fault, kvm_inject_vabt."""

    DABT = "dabt"
    PABT = "pabt"
    SIZE = "size"
    SERROR = "serror"


@dataclass(frozen=True)
class InjectedAbort:
    """An exception injected into the guest, with the address it reports."""

    kind: InjectKind
    far: int


@dataclass(frozen=True)
class HwpoisonSignal:
    """SIGBUS (BUS_MCEERR_AR) to the VMM for poisoned memory. Kernel: kvm_send_hwpoison_signal."""

    hva: int
    lsb: int


class ErrorReason(enum.Enum):
    """Why KVM_RUN fails; the step that refused is the fault's last decision."""

    UNSUPPORTED_FSC = "unsupported-fsc"
    NO_VALID_SYNDROME = "no-valid-syndrome"
    READ_PERMISSION_FAULT = "read-permission-fault"
    MEMCACHE = "memcache"
    NO_VMA = "no-vma"
    FAULTIN = "faultin"
    CACHEABLE_PFNMAP = "cacheable-pfnmap"
    MTE_NOT_ALLOWED = "mte-not-allowed"
    PGTABLE = "pgtable"


@dataclass(frozen=True)
class Error:
    """KVM_RUN fails with -errno, for a reason."""

    errno: int
    reason: ErrorReason


@dataclass(frozen=True)
class InjectedS2Fault:
    """A fault of the guest hypervisor's own stage 2, injected into L1's EL2: the ESR it
    reports (the L2 abort's syndrome with L1's fault status) and L2's faulting IPA.

    Kernel: kvm_inject_s2_fault (arch/arm64/kvm/emulate-nested.c), called from
    kvm_handle_guest_abort's nested branch.
    """

    esr: int
    ipa: int


GuestResult = (Resumed | MmioExit | NisvExit | InjectedAbort | HwpoisonSignal | Error
               | InjectedS2Fault)
