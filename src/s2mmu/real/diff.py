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
from s2mmu.arch.faults import Fault, esr_abort
from s2mmu.conformance.divergences import divergence_named
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
from s2mmu.real.backing import HostPage, PaRelation, model_pages, real_pages, relation
from s2mmu.real.host_s2 import HostComparison, compare_host
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
    GuestFaulted,
    HostDone,
    IoctlRefused,
    KvmWorld,
)
from s2mmu.scenario.records import Outcome, Run, StepRecord, World
from s2mmu.scenario.runner import run_scenario
from s2mmu.scenario.schema import Scenario
from s2mmu.scenario.stage2 import Stage2Recorder

EC_UNKNOWN, EC_IABT_CUR, EC_DABT_CUR = 0x00, 0x21, 0x25
FSC_SEA = 0x10
"""Synchronous External abort, not on a translation table walk (ESR_ELx.xFSC)."""


def profile_for_release(release: str) -> BehaviourProfile:
    """Return the model profile standing for a kernel release like "6.1.0-57-arm64" (one
    the version of which cannot be read: the current profile)."""
    m = re.match(r"(\d+)\.(\d+)", release)
    if m is None:
        return CURRENT
    return release_profile(int(m.group(1)), int(m.group(2)))


def run_model(scn: Scenario, profile: BehaviourProfile, dumps: tuple[int, ...] = (),
              pages: dict[int, dict[int, HostPage]] | None = None,
              ) -> tuple[Run, dict[int, TableDump]]:
    """Run the scenario on the model under a profile; return the run and its stage 2
    after each step in dumps (and, into pages if given, the model host's pages then).

    The profile goes into the VM's page-table environment after the first step, a memslot
    set-up step (the plan refuses scenarios without one), which walks no table.
    """
    recorder = Stage2Recorder(after=dumps)

    def apply(step: StepRecord, world: World) -> None:
        if step.index == 1:
            world.part(KvmWorld).kvm.env.profile = profile
        recorder(step, world)
        if pages is not None and step.index in dumps:
            pages[step.index] = model_pages(world.part(KvmWorld).kvm.host)

    run = run_scenario(scn, on_step=apply)
    return run, {d.step.index: d.dump for d in recorder.dumps}


# -- what is compared ---------------------------------------------------------------------


@dataclass(frozen=True)
class FaultView:
    """One stage-2 abort as compared: the IPA's page (HPFAR_EL2), what ESR_EL2 says of it,
    and FAR_EL2 (the VA a guest access by VA used, which an S1PTW abort reports too)."""

    ipa: int
    kind: Fault | None
    level: int | None
    write: bool
    exec: bool
    cm: bool
    s1ptw: bool
    far: int = 0
    esr: int = 0
    """ESR_EL2 as reported, all of it compared (the fields above decode it; the ISS of a
    load/store with a syndrome, ISV, SAS, SSE, SRT, SF and AR, is compared only here)."""

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
                         not iabt and kvm_vcpu_dabt_is_cm(abort), kvm_vcpu_abt_iss1tw(abort),
                         abort.far, abort.esr)

    def __str__(self) -> str:
        what = "fetch" if self.exec else "dc" if self.cm else "write" if self.write else "read"
        kind = self.kind.value if self.kind else "?"
        level = f" L{self.level}" if self.level is not None else ""
        far = f" FAR={self.far:#x}" if self.far >> 12 != self.ipa >> 12 else ""
        return f"{what} {kind}{level} @{self.ipa:#x}" + (" s1ptw" if self.s1ptw else "") + far


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
    far: int | None = None
    """A guest stage-1 fault's FAR_EL1."""

    def __str__(self) -> str:
        out = self.outcome.value
        if self.mmio is not None:
            ipa, length, write = self.mmio
            out += f" {'write' if write else 'read'} {length} @{ipa:#x}"
        if self.errno is not None:
            out += f" {self.errno}"
        if self.esr is not None:
            out += f" ESR_EL1={self.esr:#x}"
        if self.far is not None:
            out += f" FAR_EL1={self.far:#x}"
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
        case GuestFaulted(fault=fault):
            return Answer(Outcome.GUEST_FAULT, esr=esr_abort(fault, same_el=True),
                          far=fault.vaddress)
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
        case GuestException(esr=esr, far=far):
            return exception_answer(esr, far, access)
        case Stuck(what=what):
            return Answer(Outcome.ERROR, errno="stuck: " + what)
    raise AssertionError(st.exits[-1])


def exception_answer(esr: int, far: int | None, access: AccessKind) -> Answer:
    """Return what a guest exception means: an abort KVM injected (a synchronous external
    abort, FSC 0x10), an undefined instruction at the fetched target (a fetch that
    completed), or the guest's own stage-1 fault (ESR_EL1 and FAR_EL1 as reported)."""
    ec = esr >> 26 & 0x3F
    sea = esr & 0x3F == FSC_SEA
    if ec == EC_DABT_CUR and sea:
        return Answer(Outcome.SEA_DABT)
    if ec == EC_IABT_CUR and sea:
        return Answer(Outcome.SEA_PABT)
    if ec == EC_UNKNOWN and access is AccessKind.EXEC:
        return Answer(Outcome.COMPLETED)
    if ec in (EC_DABT_CUR, EC_IABT_CUR):
        return Answer(Outcome.GUEST_FAULT, esr=esr, far=far)
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
    BACKING = "PA relation"
    HOST_STAGE2 = "host stage 2"


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
    departures: tuple[str, ...] = ()
    """The platform departures that explain what differs in the fault stream (names of
    s2mmu.conformance.divergences), each once."""
    relations: tuple[tuple[S2LeafView, PaRelation], ...] = ()
    """Real KVM's stage-2 leaves after the step, each with its PA relation (when the
    stage 2 and the VMM's pagemap were read after it)."""
    host: HostComparison | None = None
    """pKVM's host stage 2 after the step, real against the model's (protected mode)."""


S2_WALK_FAULT_LEVEL = divergence_named("s2_walk_fault_level").name
"""QEMU 7.2 reports a stage-2 fault on a stage-1 table walk at the stage-1 level of the
table it read, where the architecture (and the model) give the stage-2 level (listed
with its reason in s2mmu.conformance.divergences)."""


def same_fault(model: FaultView, real: FaultView, plan: Plan) -> str | None:
    """Return "" when two aborts agree, the departure's name when they agree but for a
    listed QEMU departure, None when they differ."""
    if model == real:
        return ""
    if (model.s1ptw and real.s1ptw and plan.stage1 is not None
            and replace(model, level=real.level, esr=model.esr & ~3 | real.esr & 3) == real
            and plan.stage1.table_level(model.ipa) == real.level):
        return S2_WALK_FAULT_LEVEL
    return None


def same_faults(model: tuple[FaultView, ...], real: tuple[FaultView, ...],
                plan: Plan) -> tuple[str, ...] | None:
    """Return the departures that make two fault streams agree (None: they differ)."""
    if len(model) != len(real):
        return None
    found = [same_fault(m, r, plan) for m, r in zip(model, real, strict=True)]
    if any(f is None for f in found):
        return None
    return tuple(dict.fromkeys(f for f in found if f))


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


def fault_text(faults: tuple[FaultView, ...], esr: bool = False) -> str:
    """Return a fault sequence as one line (with each ESR_EL2 if esr)."""
    return "; ".join(str(f) + (f" ESR={f.esr:#x}" if esr else "") for f in faults) \
        or "no fault"


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
    departures = same_faults(mf, rf, plan)
    if departures is None:
        esr = fault_text(mf) == fault_text(rf)
        diffs.append(Difference(step.index, Aspect.FAULTS, fault_text(mf, esr),
                                fault_text(rf, esr)))
    if ma != ra:
        diffs.append(Difference(step.index, Aspect.ANSWER, str(ma), str(ra)))
    if mdirty != st.dirty:
        diffs.append(Difference(step.index, Aspect.DIRTY, dirty_text(mdirty),
                                dirty_text(st.dirty)))
    return StepComparison(step.index, step.event.do, mf, rf, ma, ra, st.dirty, tuple(diffs),
                          departures or ())


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
            real_s2: Mapping[int, TableDump] | None = None,
            model_pages: Mapping[int, Mapping[int, HostPage]] | None = None,
            host_s2: Mapping[int, TableDump] | None = None) -> DiffReport:
    """Compare the model's run with real KVM's, step by step (and the stage 2 after the
    steps both dumps are given for; with model_pages, each leaf's PA relation too, the
    real one from the VMM's pagemap at that step; host_s2: pKVM's host stage 2 read after
    steps, each compared with the model's for the same story)."""
    setup = tuple(host_differences(model.scenario, real)) + tuple(
        Difference(0, Aspect.SETUP, "ok", s) for s in real.setup)
    steps = []
    for s in model.steps:
        c = compare_step(s, real.steps.get(s.index), plan)
        if model_s2 and real_s2 and s.index in model_s2:
            if s.index in real_s2:
                extra = compare_stage2(s.index, model_s2[s.index], real_s2[s.index], plan)
                if model_pages is not None and s.index in real.pagemaps:
                    found, rels = compare_backing(
                        s.index, model_s2[s.index], real_s2[s.index], plan,
                        model_pages.get(s.index, {}), real_pages(real.pagemaps[s.index]))
                    extra += found
                    c = replace(c, relations=rels)
            else:
                extra = [Difference(s.index, Aspect.STAGE2, "dumped", "not read")]
            c = replace(c, differences=c.differences + tuple(extra))
        if host_s2 and s.index in host_s2:
            pas = [pg.pa for pg in real_pages(real.pagemaps.get(s.index, ())).values()
                   if not pg.zero]
            hc = compare_host(host_s2[s.index], profile, pas)
            c = replace(c, host=hc, differences=c.differences + tuple(host_differences_of(
                s.index, hc)))
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


def leaf_relations(dump: TableDump, plan: Plan, step: int,
                   pages: Mapping[int, HostPage]) -> dict[int, tuple[S2LeafView, PaRelation]]:
    """Return each leaf's PA relation to the VMM's memory after a step, by IPA."""
    hva_of = plan.hva_of(step)
    return {v.ipa: (v, relation(v.ipa, v.size, oa, hva_of, pages))
            for v, oa in leaves(dump, plan)}


def compare_backing(step: int, model: TableDump, real: TableDump, plan: Plan,
                    model_pages: Mapping[int, HostPage], real_pages: Mapping[int, HostPage],
                    ) -> tuple[list[Difference], tuple[tuple[S2LeafView, PaRelation], ...]]:
    """Compare the PA relation of the leaves both stage 2s have at the same IPA; return
    the differences and real KVM's leaves with their relations."""
    m = leaf_relations(model, plan, step, model_pages)
    r = leaf_relations(real, plan, step, real_pages)
    out = [Difference(step, Aspect.BACKING, f"{ipa:#x} {m[ipa][1]}", f"{ipa:#x} {r[ipa][1]}")
           for ipa in sorted(m.keys() & r.keys()) if m[ipa][1] != r[ipa][1]]
    return out, tuple(r[ipa] for ipa in sorted(r))


HOST_SHOWN = 4


def host_differences_of(step: int, hc: HostComparison) -> list[Difference]:
    """Return one difference naming what only one host stage 2 has (at most HOST_SHOWN
    ranges each side shown), or none when they agree."""
    if not hc.only_real and not hc.only_model and hc.guest_model == hc.guest_real:
        return []

    def text(items: tuple[object, ...]) -> str:
        shown = "; ".join(map(str, items[:HOST_SHOWN]))
        more = f"; ... {len(items) - HOST_SHOWN} more" if len(items) > HOST_SHOWN else ""
        return (shown + more) or "nothing else"

    out = [Difference(step, Aspect.HOST_STAGE2, text(hc.only_model), text(hc.only_real))]
    if hc.guest_model != hc.guest_real:
        out.append(Difference(step, Aspect.HOST_STAGE2, "guest memory " + guest_text(
            hc.guest_model), "guest memory " + guest_text(hc.guest_real)))
    return out


def guest_text(counts: tuple[tuple[str, int], ...]) -> str:
    """Return how a host stage 2 holds the guest's memory, as text."""
    return ", ".join(f"{n} {what}" for what, n in counts)
