"""The wording of decisions, results, events and steps: hex everywhere, one numbering."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from s2mmu.kvm.abort import (
    Error,
    ErrorReason,
    GuestAbort,
    HwpoisonSignal,
    InjectedAbort,
    InjectedS2Fault,
    InjectKind,
    MmioExit,
    NisvExit,
    Resumed,
    ResumeReason,
)
from s2mmu.kvm.dirty import SlotPage
from s2mmu.kvm.fault import (
    AccessFlag,
    GuestSea,
    InvalidateRetry,
    IoMemAbort,
    IpaOutOfRange,
    MapSize,
    MemslotLookup,
    MteNotAllowed,
    NestedMapCap,
    NestedPermFault,
    NestedS2Walk,
    NoVma,
    OutsideAction,
    OutsideMemslot,
    PfnError,
    PfnPinned,
    PgtableCall,
    PgtableOp,
    ProtDecision,
    ProtRefusal,
    ProtRefused,
    ReadPermissionFault,
    SizeReason,
    ThpAdjust,
    TopupFailed,
    UnsupportedFsc,
    VmaInfo,
)
from s2mmu.kvm.host import FaultinError, MemType, VmaKind
from s2mmu.kvm.invariants import (
    CacheablePfnmap,
    CleanWritablePage,
    MappedOutsideMemslot,
    PinLeaked,
    Stage2Mismatch,
    UnexplainedDirtyBit,
    WritableBlockWhileLogging,
)
from s2mmu.pgtable import events as pgevents
from s2mmu.pgtable.prot import KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_W, KVM_PGTABLE_PROT_X
from s2mmu.pgtable.s2trans import KvmS2Trans
from s2mmu.scenario.render_text import (
    decision_text,
    event_text,
    failure_text,
    invariant_text,
    result_text,
    slot_page_text,
    step_lines,
    timeline_lines,
)
from s2mmu.scenario.runner import run_scenario
from s2mmu.scenario.schema import load_scenario

R, W, X = (int(p) for p in (KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_W, KVM_PGTABLE_PROT_X))
SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
DIRTY = SCENARIOS / "dirty_manual_protect.toml"
ABORT = GuestAbort(0x92000021, 0x1234, 0x4000)


@pytest.mark.parametrize("decision, text", [
    (MemslotLookup(0x4000_0000, 0, 0x7F00_0000_0000, True),
     "IPA 0x40000000: slot 0, HVA 0x7f0000000000"),
    (MemslotLookup(0x4000_0000, 1, 0x7F00_0000_0000, False),
     "IPA 0x40000000: slot 1, HVA 0x7f0000000000 (read-only)"),
    (MemslotLookup(0x900_0000, None, None, False), "IPA 0x9000000: no memslot"),
    (NoVma(0x7F10_0000_0000), "no VMA at HVA 0x7f1000000000: -EFAULT"),
    (VmaInfo("ram", VmaKind.HUGETLB, MemType.NORMAL, 21, False, True, False, False),
     "VMA ram (hugetlb, normal), vma_shift 21"),
    (MapSize(1 << 21, False, 0x4000_0000, SizeReason.VMA_SHIFT), "2M (VMA shift 21)"),
    (MapSize(1 << 12, True, 0x4000_0000, SizeReason.LOGGING),
     "4K (dirty logging forces pages), force_pte"),
    (MapSize(1 << 21, False, 0, SizeReason.PUD_DOES_NOT_FIT),
     "2M (1G block does not fit the memslot)"),
    (MapSize(1 << 12, True, 0, SizeReason.PMD_DOES_NOT_FIT),
     "4K (2M block does not fit the memslot), force_pte"),
    (PfnPinned(0x10_0000_0000, True, True), "PA 0x1000000000 writable, pinned"),
    (PfnPinned(0x6000_0000_0000, False, False),
     "PA 0x600000000000 read-only, no struct page, not pinned"),
    (PfnError(FaultinError.KVM_PFN_ERR_HWPOISON), "KVM_PFN_ERR_HWPOISON"),
    (ProtDecision(False, True), "RO, non-cacheable"),
    (ProtRefused(ProtRefusal.CACHEABLE_PFNMAP_WITHOUT_FWB, -14),
     "cacheable PFNMAP without FWB+DIC: -EFAULT"),
    (ProtRefused(ProtRefusal.EXEC_NONCACHEABLE, -8),
     "exec fault on non-cacheable memory: -ENOEXEC"),
    (ThpAdjust(1 << 21, 0x4000_0000, 0x10_0000_0000), "THP: PMD block"),
    (MteNotAllowed(), "MTE VM, VMA without VM_MTE_ALLOWED: -EFAULT"),
    (InvalidateRetry(), "invalidated since mmu_seq was read: -EAGAIN, the guest retries"),
    (PgtableCall(PgtableOp.MAP, 0x4000_0000, 1 << 21, 0x10_0000_0000, R | W | X, 0),
     "IPA 0x40000000 2M -> PA 0x1000000000 RWX: ok"),
    (PgtableCall(PgtableOp.RELAX_PERMS, 0x4000_0000, 1 << 12, 0x10_0000_0000, R | W, -11),
     "IPA 0x40000000 4K -> PA 0x1000000000 RW-: -EAGAIN"),
    (ReadPermissionFault(), "read permission fault: -EFAULT"),
    (TopupFailed(-12), "memcache top-up failed: -ENOMEM"),
    (AccessFlag(0x4000_0000), "mkyoung IPA 0x40000000"),
    (IpaOutOfRange(1 << 49, 48, True, InjectKind.SIZE),
     "IPA 0x2000000000000 beyond kvm_ipa_limit (48 bits): size fault"),
    (IpaOutOfRange(1 << 40, 36, False, InjectKind.DABT),
     "IPA 0x10000000000 beyond the 36-bit IPA space: inject dabt"),
    (GuestSea(True), "claimed by the host (APEI)"),
    (GuestSea(False), "not claimed: inject SError"),
    (UnsupportedFsc(0x21, 0x92000021), "unsupported FSC 0x21: -EFAULT"),
    (OutsideMemslot(OutsideAction.SKIP_CM), "cache maintenance outside memslots: skipped"),
    (IoMemAbort(0x900_0018, True, True, 4, False), "KVM_EXIT_MMIO write 4 bytes at 0x9000018"),
    (IoMemAbort(0x900_0018, False, False, 0, True), "no valid syndrome: KVM_EXIT_ARM_NISV"),
    (IoMemAbort(0x900_0018, False, False, 0, False), "no valid syndrome: -ENOSYS"),
    (NestedS2Walk(0x1000, KvmS2Trans(0x4020_0000, 1 << 21, True, True, True, False, 2, 0)),
     "L1 stage 2: L2 IPA 0x1000 -> IPA 0x40200000 2M level 2 RWPX"),
    (NestedS2Walk(0x1000, KvmS2Trans(0, 0, False, False, False, False, 3, 0, esr=0x07)),
     "L1 stage 2 faults on L2 IPA 0x1000 (FSC 0x7, level 3)"),
    (NestedPermFault(0x1000, 0x9200004F),
     "L1 stage 2 forbids the access at L2 IPA 0x1000: forward ESR 0x9200004f"),
    (NestedMapCap(1 << 12, 1 << 12), "L1 maps 4K: at most 4K"),
])
def test_each_decision_has_its_words(decision: object, text: str) -> None:
    assert decision_text(decision) == text  # type: ignore[arg-type]


def test_every_decision_type_is_worded() -> None:
    from s2mmu.kvm import fault

    kinds = typing.get_args(fault.Decision)
    worded = {type(d) for d, _ in test_each_decision_has_its_words.pytestmark[0].args[1]}
    assert set(kinds) == worded


@pytest.mark.parametrize("result, text", [
    (Resumed(ResumeReason.CM_SKIPPED), "guest resumed (cache maintenance skipped (kvm_incr_pc))"),
    (MmioExit(0x900_0018, 4, False), "KVM_EXIT_MMIO read 4 bytes at IPA 0x9000018"),
    (NisvExit(0x45, 0x900_0000), "KVM_EXIT_ARM_NISV at IPA 0x9000000"),
    (InjectedAbort(InjectKind.SIZE, 0x1234),
     "inject address size fault into the guest (FAR 0x1234)"),
    (InjectedS2Fault(0x92000007, 0x1000), "inject L1 stage-2 fault into the guest hypervisor "
     "(ESR 0x92000007, IPA 0x1000)"),
    (HwpoisonSignal(0x7F00_0000_3000, 12),
     "SIGBUS BUS_MCEERR_AR to the VMM (HVA 0x7f0000003000, lsb 12)"),
    (Error(-14, ErrorReason.UNSUPPORTED_FSC),
     "KVM_RUN fails -EFAULT: Unsupported FSC: xFSC=0x21 ESR_EL2=0x92000021"),
])
def test_results_have_their_words(result: object, text: str) -> None:
    assert result_text(result, ABORT) == text  # type: ignore[arg-type]


def test_a_refusing_step_words_the_error() -> None:
    text = result_text(Error(-14, ErrorReason.NO_VMA), ABORT, (NoVma(0x7F00_0000_0000),))
    assert text == "KVM_RUN fails -EFAULT: no VMA at HVA 0x7f0000000000: -EFAULT"


def test_every_model_event_has_words_with_hex_addresses() -> None:
    for name in pgevents.__all__ if hasattr(pgevents, "__all__") else dir(pgevents):
        cls = getattr(pgevents, name)
        if not (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")):
            continue
        args = [0x8000_1000 if f in ("pa", "ipa", "va", "old", "new") else
                ((1, -11),) if f == "errors" else
                ("ish" if f == "domain" else "x" if f in ("op", "access", "function",
                                                           "condition") else 1)
                for f in cls._fields]
        text = event_text(cls(*args))
        assert text != cls.__name__ and "(" not in text.split(":")[0], text
        if "pa" in cls._fields or "ipa" in cls._fields:
            assert "0x80001000" in text and "2147487744" not in text


def test_trace_lines_are_rendered_events_not_reprs() -> None:
    run = run_scenario(load_scenario(DIRTY), trace=True)
    trace = [line for s in run.steps for line in step_lines(s, trace=True)
             if line.startswith("    . ")]
    assert trace and any("table page allocated at PA 0x" in t for t in trace)
    assert not [t for t in trace if re.search(r"\w+\(\w+=", t)
                or re.search(r"(PA|IPA) (?!0x)", t)]


def test_one_numbering_from_memslots_to_the_failure_list() -> None:
    text = DIRTY.read_text().replace("expect_dirty_count = 960", "expect_dirty_count = 7", 1)
    run = run_scenario(load_scenario("d.toml", text))
    (failure,) = run.failures
    number = failure.step.index
    assert failure_text(failure).startswith(f"step #{number} get_dirty_log (line ")
    lines = timeline_lines(run)
    head = next(line for line in lines if line.startswith(f"#{number} "))
    assert f"[line {failure.step.line:>3}]" in head
    assert [s.index for s in run.steps] == list(range(1, len(run.steps) + 1))
    assert run.steps[0].event.do == "memslot"


def test_dirty_pages_are_slot_relative_and_hex() -> None:
    assert slot_page_text(SlotPage(0, 0x210)) == "slot 0 page 0x210"
    run = run_scenario(load_scenario(DIRTY))
    gets = [step_lines(s)[0] for s in run.steps if s.event.do == "get_dirty_log"]
    assert gets and all(re.search(r"dirty \[0x[0-9a-f]+(, 0x[0-9a-f]+)*(, \.\.\.)?\]$", g)
                        for g in gets), gets


@pytest.mark.parametrize("violation, text", [
    (PinLeaked(0x10_0000_0000, 2),
     "host page 0x1000000000 has refcount 2 (a pin was not released)"),
    (MappedOutsideMemslot(0x9000_0000, 0x1000),
     "IPA 0x90000000+0x1000 is mapped outside a memslot"),
    (WritableBlockWhileLogging(0x4000_0000, 1 << 21, 0),
     "IPA 0x40000000+0x200000: writable block in logging slot 0"),
    (CleanWritablePage(0x4000_3000, 0x1000, 1),
     "IPA 0x40003000+0x1000: writable page in logging slot 1 but not dirty"),
    (CacheablePfnmap(0x1_0000_0000, 0x1000),
     "IPA 0x100000000+0x1000: cacheable VM_PFNMAP mapping without FWB+DIC"),
    (Stage2Mismatch(0x4000_0000, 1 << 21, 0x1F_F000, 0x10_001F_F000, None),
     "IPA 0x40000000+0x200000: stage 2 gives PA 0x10001ff000 at +0x1ff000, the host maps "
     "nothing"),
    (UnexplainedDirtyBit(0, 0x10, 0x4001_0000),
     "slot 0 page 0x10 (IPA 0x40010000) is dirty but no handled write dirtied it"),
])
def test_each_kvm_invariant_has_its_words(violation: object, text: str) -> None:
    from s2mmu.kvm import invariants

    assert invariant_text(violation) == text
    assert type(violation) in typing.get_args(invariants.KvmViolation)
