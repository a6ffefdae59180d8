"""Compare the model's run of a scenario with real KVM's, step by step.

For each step (the model's numbering, which the plan keeps): the stage-2 aborts KVM handled
(page, fault kind, level, write, exec, cache maintenance: the tracepoint stream without the
VMM's own code slot and marker page against the model's faults), the step's answer (how a
guest access ended: completed, MMIO exit with its IPA, length and direction, injected abort,
KVM_RUN's errno; an ioctl's or host call's errno), and GET_DIRTY_LOG's pages. A difference
names the step, the aspect, and both answers.

The model runs under the behaviour profile that stands for the booted kernel's release
(:func:`profile_for_release`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from s2mmu.arch.dump import S2LeafAttrs, TableDump
from s2mmu.arch.faults import Fault
from s2mmu.kvm.abort import (
    Error,
    GuestAbort,
    MmioExit,
    NisvExit,
    fault_kind,
    fsc_level,
    kvm_vcpu_abt_iss1tw,
    kvm_vcpu_dabt_is_cm,
    kvm_vcpu_get_fault_ipa,
    kvm_vcpu_trap_get_fault,
    kvm_vcpu_trap_is_iabt,
)
from s2mmu.kvm.errno import errname
from s2mmu.pgtable.profile import CURRENT, BehaviourProfile
from s2mmu.pgtable.profile import profile_for_release as release_profile
from s2mmu.real.log import (
    GuestException,
    MmioSeen,
    NisvSeen,
    RealRun,
    RealStep,
    RunFailed,
    Stuck,
)
from s2mmu.real.plan import GuestStep, Plan
from s2mmu.scenario.kvm_events import (
    AccessKind,
    DirtyLog,
    GuestAccess,
    HostDone,
    IoctlRefused,
    KvmWorld,
)
from s2mmu.scenario.records import Outcome, Run, StepRecord, World
from s2mmu.scenario.runner import run_scenario
from s2mmu.scenario.schema import Scenario
from s2mmu.scenario.stage2 import Stage2Recorder

EC_UNKNOWN, EC_IABT_CUR, EC_DABT_CUR = 0x00, 0x21, 0x25


def profile_for_release(release: str) -> BehaviourProfile:
    """Return the model profile standing for a kernel release like "6.1.0-57-arm64" (one
    the version of which cannot be read: the current profile)."""
    m = re.match(r"(\d+)\.(\d+)", release)
    if m is None:
        return CURRENT
    return release_profile(int(m.group(1)), int(m.group(2)))


def run_model(scn: Scenario, profile: BehaviourProfile,
              dumps: tuple[int, ...] = ()) -> tuple[Run, dict[int, TableDump]]:
    """Run the scenario on the model under a profile; return the run and its stage 2
    after each step in dumps.

    The profile goes into the VM's page-table environment after the first step, a memslot
    set-up step (the plan refuses scenarios without one), which walks no table.
    """
    recorder = Stage2Recorder(after=dumps)

    def apply(step: StepRecord, world: World) -> None:
        if step.index == 1:
            world.part(KvmWorld).kvm.env.profile = profile
        recorder(step, world)

    run = run_scenario(scn, on_step=apply)
    return run, {d.step.index: d.dump for d in recorder.dumps}


# -- what is compared ---------------------------------------------------------------------


@dataclass(frozen=True)
class FaultView:
    """One stage-2 abort as compared: the IPA's page and what the ESR says of it."""

    ipa: int
    kind: Fault | None
    level: int | None
    write: bool
    exec: bool
    cm: bool
    s1ptw: bool

    @staticmethod
    def of(abort: GuestAbort) -> FaultView:
        """Return the compared view of an abort (ESR_EL2, FAR_EL2, HPFAR_EL2)."""
        kind = fault_kind(abort)
        fsc = kvm_vcpu_trap_get_fault(abort)
        level = fsc_level(fsc) if kind in (Fault.TRANSLATION, Fault.PERMISSION,
                                           Fault.ACCESS_FLAG, Fault.ADDRESS_SIZE) else None
        iabt = kvm_vcpu_trap_is_iabt(abort)
        write = not iabt and bool(abort.esr >> 6 & 1)
        return FaultView(kvm_vcpu_get_fault_ipa(abort), kind, level, write, iabt,
                         not iabt and kvm_vcpu_dabt_is_cm(abort), kvm_vcpu_abt_iss1tw(abort))

    def __str__(self) -> str:
        what = "fetch" if self.exec else "dc" if self.cm else "write" if self.write else "read"
        kind = self.kind.value if self.kind else "?"
        level = f" L{self.level}" if self.level is not None else ""
        return f"{what} {kind}{level} @{self.ipa:#x}" + (" s1ptw" if self.s1ptw else "")


@dataclass(frozen=True)
class Answer:
    """How a step ended, in the terms both sides can give.

    outcome: the scenario outcome; mmio: an MMIO exit's (IPA, length, write); errno: a
    failed KVM_RUN, ioctl or host call ("EFAULT"); esr: a guest exception's ESR_EL1.
    """

    outcome: Outcome
    mmio: tuple[int, int, bool] | None = None
    errno: str | None = None
    esr: int | None = None

    def __str__(self) -> str:
        out = self.outcome.value
        if self.mmio is not None:
            ipa, length, write = self.mmio
            out += f" {'write' if write else 'read'} {length} @{ipa:#x}"
        if self.errno is not None:
            out += f" {self.errno}"
        if self.esr is not None:
            out += f" ESR_EL1={self.esr:#x}"
        return out


def _errno(ret: int) -> str:
    return errname(ret).lstrip("-")


def model_answer(step: StepRecord) -> Answer:
    """Return the model's answer for a step."""
    result = step.faults[-1].handled.result if step.faults else None
    match result:
        case MmioExit(ipa=ipa, length=length, is_write=w) if step.outcome is Outcome.MMIO:
            return Answer(Outcome.MMIO, mmio=(ipa, length, w))
        case Error(errno=e) if step.outcome is Outcome.ERROR:
            return Answer(Outcome.ERROR, errno=_errno(e))
        case NisvExit(ipa=ipa) if step.outcome is Outcome.NISV:
            return Answer(Outcome.NISV, mmio=(ipa, 0, False))
    match step.result:
        case IoctlRefused(errno=e):
            return Answer(Outcome.ERROR, errno=_errno(e))
        case HostDone(errno=e) if e:
            return Answer(Outcome.ERROR, errno=_errno(e))
    if step.outcome in (Outcome.RESUMED, Outcome.RETRY):
        return Answer(Outcome.COMPLETED)  # the model stopped retrying; the guest goes on
    return Answer(step.outcome)


def real_answer(st: RealStep, access: AccessKind | None) -> Answer:
    """Return real KVM's answer for a step from the VMM's records."""
    if st.errno is not None:
        return Answer(Outcome.ERROR, errno=st.errno)
    if access is None:
        return Answer(Outcome.DONE)
    if not st.exits:
        return Answer(Outcome.COMPLETED)
    match st.exits[-1]:
        case MmioSeen(ipa=ipa, length=length, is_write=w):
            return Answer(Outcome.MMIO, mmio=(ipa, length, w))
        case NisvSeen(ipa=ipa):
            return Answer(Outcome.NISV, mmio=(ipa, 0, False))
        case RunFailed(errno=e):
            return Answer(Outcome.ERROR, errno=e)
        case GuestException(esr=esr):
            return exception_answer(esr, access)
        case Stuck(what=what):
            return Answer(Outcome.ERROR, errno="stuck: " + what)
    raise AssertionError(st.exits[-1])


def exception_answer(esr: int, access: AccessKind) -> Answer:
    """Return what a guest exception means: an injected abort, or (an undefined instruction
    at the fetched target) a fetch that completed at stage 2."""
    ec = esr >> 26 & 0x3F
    if ec == EC_DABT_CUR:
        return Answer(Outcome.SEA_DABT)
    if ec == EC_IABT_CUR:
        return Answer(Outcome.SEA_PABT)
    if ec == EC_UNKNOWN and access is AccessKind.EXEC:
        return Answer(Outcome.COMPLETED)
    return Answer(Outcome.GUEST_FAULT, esr=esr)


# -- the comparison -----------------------------------------------------------------------


class Aspect(enum.Enum):
    """What of a step differs."""

    SETUP = "set-up"
    MISSING = "missing"
    FAULTS = "faults"
    ANSWER = "answer"
    DIRTY = "dirty log"
    STAGE2 = "stage 2"
    FRAMES = "shared frames"


@dataclass(frozen=True)
class Difference:
    """One disagreement: the step, the aspect, and both answers as text."""

    step: int
    aspect: Aspect
    model: str
    real: str


@dataclass(frozen=True)
class StepComparison:
    """One step compared: what it was, both fault streams and answers, the differences."""

    index: int
    do: str
    model_faults: tuple[FaultView, ...]
    real_faults: tuple[FaultView, ...]
    model_answer: Answer
    real_answer: Answer
    dirty: tuple[int, ...] | None
    differences: tuple[Difference, ...]


@dataclass(frozen=True)
class DiffReport:
    """A scenario compared: the kernel, the profile, each step, every difference."""

    scenario: str
    release: str
    profile: str
    steps: tuple[StepComparison, ...]
    setup: tuple[Difference, ...]

    @property
    def differences(self) -> list[Difference]:
        """Return every difference in step order."""
        return [*self.setup, *(d for s in self.steps for d in s.differences)]

    @property
    def agreed(self) -> int:
        """Return how many steps agree on every aspect."""
        return sum(1 for s in self.steps if not s.differences)


def fault_text(faults: tuple[FaultView, ...]) -> str:
    """Return a fault sequence as one line."""
    return "; ".join(str(f) for f in faults) or "no fault"


def dirty_text(pages: tuple[int, ...] | None) -> str:
    """Return a dirty-page list as text."""
    return "no bitmap" if pages is None else "[" + ", ".join(map(str, pages)) + "]"


def compare_step(step: StepRecord, st: RealStep | None, plan: Plan) -> StepComparison:
    """Compare one step."""
    access = step.event.access if isinstance(step.event, GuestAccess) else None
    mf = tuple(FaultView.of(f.abort) for f in step.faults)
    ma = model_answer(step)
    mdirty = step.result.pages if isinstance(step.result, DirtyLog) else None
    if st is None or not st.done:
        why = "; ".join(str(e) for e in st.exits) if st else "the VMM never reached it"
        return StepComparison(step.index, step.event.do, mf, (), ma, Answer(Outcome.ERROR),
                              None, (Difference(step.index, Aspect.MISSING, str(ma), why),))
    rf = tuple(FaultView.of(f.abort) for f in st.faults if not plan.is_machinery(f.ipa))
    ra = real_answer(st, access)
    diffs = []
    if mf != rf:
        diffs.append(Difference(step.index, Aspect.FAULTS, fault_text(mf), fault_text(rf)))
    if ma != ra:
        diffs.append(Difference(step.index, Aspect.ANSWER, str(ma), str(ra)))
    if mdirty != st.dirty:
        diffs.append(Difference(step.index, Aspect.DIRTY, dirty_text(mdirty),
                                dirty_text(st.dirty)))
    return StepComparison(step.index, step.event.do, mf, rf, ma, ra, st.dirty, tuple(diffs))


CTR_DIC, CTR_IDC = 29, 28


def host_differences(scn: Scenario, real: RealRun) -> list[Difference]:
    """Return where the scenario's host features say otherwise than the booted CPU's
    CTR_EL0 as EL0 reads it (Linux's sanitised view, the one its ARM64_HAS_CACHE_DIC and
    ARM64_HAS_CACHE_IDC capabilities follow: DIC makes KVM map every page executable,
    both change the cache maintenance)."""
    if real.ctr_el0 is None:
        return []
    features = scn.config("kvm").features
    out = []
    for name, bit in (("dic", CTR_DIC), ("idc", CTR_IDC)):
        has = bool(real.ctr_el0 >> bit & 1)
        if (name in features) != has:
            out.append(Difference(0, Aspect.SETUP, f"host feature {name}: "
                                  f"{'yes' if name in features else 'no'}",
                                  f"CTR_EL0={real.ctr_el0:#x}: {name.upper()}={int(has)}"))
    return out


def compare(model: Run, real: RealRun, plan: Plan, profile: BehaviourProfile,
            model_s2: Mapping[int, TableDump] | None = None,
            real_s2: Mapping[int, TableDump] | None = None) -> DiffReport:
    """Compare the model's run with real KVM's, step by step (and the stage 2 after the
    steps both dumps are given for)."""
    setup = tuple(host_differences(model.scenario, real)) + tuple(
        Difference(0, Aspect.SETUP, "ok", s) for s in real.setup)
    steps = []
    for s in model.steps:
        c = compare_step(s, real.steps.get(s.index), plan)
        if model_s2 and real_s2 and s.index in model_s2:
            if s.index in real_s2:
                extra = compare_stage2(s.index, model_s2[s.index], real_s2[s.index], plan)
            else:
                extra = [Difference(s.index, Aspect.STAGE2, "dumped", "not read")]
            c = replace(c, differences=c.differences + tuple(extra))
        steps.append(c)
    return DiffReport(model.scenario.name, real.release, profile.name, tuple(steps), setup)


def guest_steps(plan: Plan) -> int:
    """Return how many guest-access steps a plan has."""
    return sum(1 for s in plan.steps if isinstance(s, GuestStep))


@dataclass(frozen=True)
class RealStepView:
    """One step as real KVM ran it, in the compared terms (for `s2mmu real run`)."""

    index: int
    do: str
    faults: tuple[FaultView, ...]
    machinery_faults: int
    """Aborts on the VMM's own code slot and marker page (not the scenario's)."""
    answer: Answer
    dirty: tuple[int, ...] | None
    exits: tuple[str, ...]


def real_steps(plan: Plan, real: RealRun) -> tuple[RealStepView, ...]:
    """Return every step of a plan as real KVM ran it."""
    out = []
    for step in plan.steps:
        st = real.steps.get(step.index)
        access = step.access if isinstance(step, GuestStep) else None
        if st is None or not st.done:
            why = "; ".join(str(e) for e in st.exits) if st else "not reached"
            out.append(RealStepView(step.index, plan.dos[step.index - 1], (), 0,
                                    Answer(Outcome.ERROR, errno="stuck: " + why), None, ()))
            continue
        faults = tuple(FaultView.of(f.abort) for f in st.faults if not plan.is_machinery(f.ipa))
        out.append(RealStepView(step.index, plan.dos[step.index - 1], faults,
                                len(st.faults) - len(faults), real_answer(st, access), st.dirty,
                                tuple(str(e) for e in st.exits)))
    return tuple(out)


# -- the stage 2 after chosen steps --------------------------------------------------------


@dataclass(frozen=True)
class S2LeafView:
    """One stage-2 leaf as compared: IPA, size and everything but the output address."""

    ipa: int
    size: int
    attrs: S2LeafAttrs

    def __str__(self) -> str:
        a = self.attrs
        perms = "".join(c if on else "-" for c, on in (("R", a.perms.r), ("W", a.perms.w),
                                                       ("x", a.perms.px)))
        sw = f" SW={a.sw:#x}" if a.sw else ""
        return (f"{self.ipa:#x} {self.size >> 10}K L{a.level} {perms}"
                f"{' AF' if a.af else ''} MemAttr={a.memattr:#x}{sw}")


def leaves(dump: TableDump, plan: Plan) -> tuple[tuple[S2LeafView, int], ...]:
    """Return a stage-2 dump's leaves with their output addresses, the VMM's own left out.

    MemAttr is kept raw (its meaning depends on HCR_EL2.FWB, which a halt that finds VHE's
    host running does not show: the host's HCR_EL2 is not the guest's).
    """
    out = []
    for r in dump.ranges():
        size = (r.end - r.start) // r.entries
        for i in range(r.entries):
            ipa = r.start + i * size
            if not plan.is_machinery(ipa) and isinstance(r.attrs, S2LeafAttrs):
                raw = replace(r.attrs, fwb=False, attrs=None)
                out.append((S2LeafView(ipa, size, raw), r.oa + i * size))
    return tuple(out)


def shared_frames(mapped: tuple[tuple[S2LeafView, int], ...]) -> frozenset[frozenset[int]]:
    """Return the groups of IPAs (two or more) whose leaves map the same output address."""
    by_oa: dict[int, set[int]] = {}
    for leaf, oa in mapped:
        by_oa.setdefault(oa, set()).add(leaf.ipa)
    return frozenset(frozenset(g) for g in by_oa.values() if len(g) > 1)


def leaves_text(views: list[S2LeafView]) -> str:
    """Return leaves as one line (at most 4 shown)."""
    shown = "; ".join(map(str, views[:4]))
    return (shown + (f"; ... {len(views) - 4} more" if len(views) > 4 else "")) or "none"


def groups_text(groups: frozenset[frozenset[int]]) -> str:
    """Return shared-frame groups as text."""
    return "; ".join("{" + ", ".join(hex(i) for i in sorted(g)) + "}"
                     for g in sorted(groups, key=min)) or "no frame shared"


def compare_stage2(step: int, model: TableDump, real: TableDump,
                   plan: Plan) -> list[Difference]:
    """Compare the stage 2 after a step: leaves (IPA, size, level, permissions, AF,
    MemAttr, software bits) and which IPAs share a frame (output addresses differ between
    the two hosts, so only their equalities are compared)."""
    m, r = leaves(model, plan), leaves(real, plan)
    out = []
    mv, rv = [v for v, _ in m], [v for v, _ in r]
    if mv != rv:
        only_m = [v for v in mv if v not in rv]
        only_r = [v for v in rv if v not in mv]
        out.append(Difference(step, Aspect.STAGE2, leaves_text(only_m), leaves_text(only_r)))
    gm, gr = shared_frames(m), shared_frames(r)
    if gm != gr:
        out.append(Difference(step, Aspect.FRAMES, groups_text(gm), groups_text(gr)))
    return out
