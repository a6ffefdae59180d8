"""One-call entries for a notebook: translate an address, run an AT instruction.

``s2mmu.translate(va, regs=..., memory=...)`` and ``s2mmu.at(op, va, regs=..., memory=...)``
take registers by their Arm names (or a SysRegs), memory as an ``s2mmu.arch.memory.PhysMem``
(filled by hand or with ``s2mmu.arch.builder.TableBuilder``) or as a stage 2 built with the
page-table library (``s2mmu.pgtable``), and return result records with the answer in the
terms the hardware reports it: ``.pa``, ``.par``, ``.fault``, ``.esr()``, ``.far()``,
``.hpfar()``, and ``.explain()`` for the walk level by level (rendered by
``s2mmu.arch.explain``, the same text ``s2mmu translate --explain`` prints).

A stage 2 given as ``memory`` is the translation's physical memory, and its VTCR_EL2 and
VTTBR_EL2 (from the KvmPgtable's kvm_s2_mmu and PGD) are the stage 2's registers, with
HCR_EL2.VM set (and HCR_EL2.FWB when the table uses the FWB encoding). The guest's own
stage-1 tables are written at IPAs through :func:`guest_memory`.

Stage 1 only, a 4KB page at VA 0x8040205000 (the at-case example's tables):

>>> import s2mmu
>>> from s2mmu.arch.memory import PhysMem
>>> mem = PhysMem()
>>> for pa, desc in [(0x60000008, 0x60001003), (0x60001008, 0x60002003),
...                  (0x60002008, 0x60003003), (0x60003028, 0x90003703)]:
...     mem.write64(pa, desc)
>>> t = s2mmu.translate(0x8040205000, regs={"SCTLR_EL1": 0x30D00801,
...                     "TCR_EL1": 0x580903510, "MAIR_EL1": 0xFF, "TTBR0_EL1": 0x60000000},
...                     memory=mem)
>>> t
Translation(va=0x8040205000, pa=0x90003000, attrs='Normal iNC oNC OSH', par=0x...)
>>> hex(t.pa), t.fault, t.esr()
('0x90003000', None, None)
>>> print(t.explain())  # doctest: +ELLIPSIS
VA 0x8040205000 EL1 read in the EL1&0 regime
  HCR_EL2 not given: 0x80000000 (VM=0), stage 2 off
  stage 1: TTBR0_EL1, 4KB granule, 48-bit input (T0SZ=16), start level 0, table at 0x60000000, ...
  S1 L0  0x60000000[1]: 0x0000000060001003  table -> 0x60001000
...
  SCTLR_EL1.C=0 changed the stage-1 attributes: Normal iWB-RAWA oWB-RAWA ISH -> Normal iNC oNC OSH
-> 0x90003000  Normal iNC oNC OSH

A fault is a value, with the syndrome it is taken with:

>>> f = s2mmu.translate(0x8040206000, regs=t.regs, memory=mem, access="w")
>>> f.fault.statuscode.value, f.fault.level, hex(f.esr()), hex(f.far()), f.hpfar()
('Translation', 3, '0x96000047', '0x8040206000', None)

Two stages: KVM's page-table library builds the stage 2, the guest's stage 1 lives in
guest memory at IPAs:

>>> from s2mmu import pgtable
>>> from s2mmu.arch.builder import BumpAllocator, TableBuilder, s1_attrs
>>> from s2mmu.arch.params import Granule
>>> env = pgtable.new_env()
>>> s2 = pgtable.new_stage2(env, ipa_bits=40)
>>> pgtable.stage2_map_topup(s2, 0x4000_0000, 0x20_0000, 0x8_0000_0000,
...                          pgtable.KVM_PGTABLE_PROT_RWX)
0
>>> s1 = TableBuilder(s2mmu.guest_memory(s2), BumpAllocator(0x4010_0000, 0x4020_0000),
...                   Granule.G4K, iasize=48, startlevel=0)
>>> s1.map(0x1000, 0x4000_3000, 0x1000, s1_attrs())
>>> t2 = s2mmu.translate(0x1234, regs={"SCTLR_EL1": 0x30D00801, "TCR_EL1": 0x500803510,
...                      "MAIR_EL1": 0xFF, "TTBR0_EL1": s1.root}, memory=s2)
>>> hex(t2.pa), len(t2.steps)    # 4 stage-1 reads, each after a 2-level stage-2 walk, + 2
('0x800003234', 14)
>>> a = s2mmu.at("S12E1R", 0x1234, regs=t2.regs, memory=s2)
>>> a
AtInstruction(op='S12E1R', va=0x1234, el=2, par=0xff00000800003b80)
>>> hex(a.pa)
'0x800003234'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from s2mmu.arch.access import AccessDescriptor, acc_at, acc_gpr, acc_ifetch
from s2mmu.arch.at import (
    AtException,
    AtOp,
    AtResult,
    ParResult,
    at_outcome,
    at_regime,
    at_undefined_reason,
)
from s2mmu.arch.attrs import MemoryAttributes
from s2mmu.arch.batch import BatchResult, translate_batch
from s2mmu.arch.config import DEFAULT_CHOICES, ImplChoices
from s2mmu.arch.errors import InputError
from s2mmu.arch.explain import (
    TranslationRun,
    explain_at_lines,
    explain_text,
    trace_translation,
)
from s2mmu.arch.faults import FaultRecord
from s2mmu.arch.features import PRESETS, FeatureSet
from s2mmu.arch.memory import MemoryWrite, PhysMem
from s2mmu.arch.state import SysRegs, regime_for
from s2mmu.arch.translate import AddressDescriptor, Env, stage2_lookup
from s2mmu.arch.walk import WalkStep
from s2mmu.pgtable.env import stage2_vttbr
from s2mmu.pgtable.profile import PROFILES, BehaviourProfile, behaviour_profile
from s2mmu.pgtable.prot import stage2_has_fwb
from s2mmu.pgtable.table import KvmPgtable

HCR_EL2_VM = 1 << 0
HCR_EL2_FWB = 1 << 46

Regs = Mapping[str, int] | SysRegs
Memory = PhysMem | KvmPgtable
ACCESS = ("r", "w", "x")


def machine(regs: Regs | None, memory: Memory | None) -> tuple[SysRegs, frozenset[str], PhysMem]:
    """Return the registers, the names given, and the physical memory a call works on.

    regs: Arm register names to values (the others take SysRegs' defaults, MMUs off), or
    a SysRegs (every register given). memory: a PhysMem, or a stage 2 from s2mmu.pgtable
    (its memory, VTCR_EL2, VTTBR_EL2, and HCR_EL2.VM/FWB unless regs set them).
    """
    if isinstance(regs, SysRegs):
        values, given = regs.to_mapping(), frozenset(SysRegs.names())
    else:
        values = {name.upper(): v for name, v in (regs or {}).items()}
        given = frozenset(values)
    if isinstance(memory, KvmPgtable):
        stage2 = {"VTCR_EL2": memory.s2_mmu.vtcr, "VTTBR_EL2": stage2_vttbr(memory)}
        hcr = values.get("HCR_EL2", SysRegs().HCR_EL2) | HCR_EL2_VM
        hcr |= HCR_EL2_FWB if stage2_has_fwb(memory) else 0
        values = {**stage2, **values, "HCR_EL2": hcr}
        given = given | frozenset(stage2) | {"HCR_EL2"}
        mem = memory.ops.mem
    else:
        mem = memory if memory is not None else PhysMem()
    return SysRegs.from_mapping(values), given, mem


def environment(mem: PhysMem, features: FeatureSet | str,
                choices: ImplChoices = DEFAULT_CHOICES) -> Env:
    """Return the Env of a call: memory, the implemented features (a preset name or a
    FeatureSet) and the implementation's choices."""
    if isinstance(features, str):
        if features not in PRESETS:
            raise InputError(f"unknown feature preset {features!r} "
                             f"(known: {', '.join(sorted(PRESETS))})")
        features = PRESETS[features]()
    return Env(mem, features, choices)


def access_of(access: str | AccessDescriptor, el: int, pan: bool) -> AccessDescriptor:
    """Return the access: "r", "w" or "x" at el (PSTATE.PAN=pan), or a given descriptor."""
    if isinstance(access, AccessDescriptor):
        return access
    if access not in ACCESS:
        raise InputError(f"access must be one of {', '.join(ACCESS)}, got {access!r}")
    if el not in (0, 1, 2):
        raise InputError(f"el must be 0, 1 or 2, got {el!r}")
    return acc_ifetch(el) if access == "x" else acc_gpr(el, access == "w", pan=pan)


def guest_memory(stage2: KvmPgtable) -> GuestMemory:
    """Return a view of stage2's memory addressed by IPA, for writing a guest's tables."""
    return GuestMemory(stage2)


class GuestMemory:
    """Guest-physical memory: 64-bit words at IPAs, through a stage 2's mappings.

    Each access translates the IPA with the architecture's stage-2 walk of the tables
    (a read, AccessFlag updates as the hardware would make them off). An IPA the stage 2
    does not map is API misuse (ValueError).
    """

    def __init__(self, stage2: KvmPgtable) -> None:
        self.stage2 = stage2

    def pa(self, ipa: int) -> int:
        """Return the PA stage 2 maps ipa to."""
        pgt = self.stage2
        got = stage2_lookup(pgt.ops.mem, pgt.s2_mmu.vtcr, stage2_vttbr(pgt), ipa)
        if isinstance(got, FaultRecord):
            raise ValueError(f"IPA {ipa:#x} is not mapped by the stage 2: {got.reason or ''}"
                             f" ({got.statuscode.value} fault, level {got.level})")
        return got.paddress

    def read64(self, pa: int, big_endian: bool = False) -> int:
        """Return the word at IPA pa."""
        return self.stage2.ops.mem.read64(self.pa(pa), big_endian)

    def write64(self, pa: int, value: int, big_endian: bool = False) -> None:
        """Write the word at IPA pa."""
        self.stage2.ops.mem.write64(self.pa(pa), value, big_endian)


@dataclass(frozen=True, repr=False)
class Translation:
    """What one translation gave: the output address or the fault, and how it got there.

    run is the whole record (s2mmu.arch.explain.TranslationRun): parameters, every
    descriptor read, the result, PAR_EL1, the abort, the hardware's writes.
    """

    run: TranslationRun

    @property
    def pa(self) -> int | None:
        """Return the output address (the IPA with stage1_only), None for a fault."""
        r = self.run.result
        return r.paddress if isinstance(r, AddressDescriptor) else None

    @property
    def attrs(self) -> MemoryAttributes | None:
        """Return the memory attributes of the result, None for a fault."""
        r = self.run.result
        return r.memattrs if isinstance(r, AddressDescriptor) else None

    @property
    def fault(self) -> FaultRecord | None:
        """Return the fault (ASL FaultRecord), None when the translation succeeded."""
        r = self.run.result
        return r if isinstance(r, FaultRecord) else None

    @property
    def par(self) -> int:
        """Return PAR_EL1 as an AT instruction would report this translation."""
        return self.run.par

    @property
    def regs(self) -> SysRegs:
        """Return the register values the translation used."""
        return self.run.regs

    @property
    def steps(self) -> tuple[WalkStep, ...]:
        """Return every descriptor read, in hardware order."""
        return self.run.steps

    @property
    def writes(self) -> tuple[MemoryWrite, ...]:
        """Return the descriptor words the hardware wrote (access flag, dirty state)."""
        return self.run.writes

    def esr(self) -> int | None:
        """Return ESR_ELx of the abort a fault is taken as (None without a fault)."""
        return self.run.abort.esr if self.run.abort is not None else None

    def far(self) -> int | None:
        """Return FAR_ELx of the abort (the faulting VA), None without a fault."""
        return self.run.abort.far if self.run.abort is not None else None

    def hpfar(self) -> int | None:
        """Return HPFAR_EL2 where the abort sets it (a stage-2 fault), else None."""
        return self.run.abort.hpfar if self.run.abort is not None else None

    def taken_to(self) -> int | None:
        """Return the EL the abort is taken to, None without a fault."""
        return self.run.abort.taken_to if self.run.abort is not None else None

    def explain(self, walk: bool = True) -> str:
        """Return the translation explained level by level (translate --explain's text)."""
        return explain_text(self.run, walk)

    def __repr__(self) -> str:
        r = self.run.result
        if isinstance(r, AddressDescriptor):
            return (f"Translation(va={self.run.va:#x}, pa={r.paddress:#x}, "
                    f"attrs={r.memattrs.describe()!r}, par={self.par:#x})")
        a = self.run.abort
        hp = f"{a.hpfar:#x}" if a is not None and a.hpfar is not None else "None"
        esr = f"{a.esr:#x}" if a is not None else "None"
        return (f"Translation(va={self.run.va:#x}, fault={r.statuscode.value!r}, "
                f"level={r.level}, stage={2 if r.secondstage else 1}, esr={esr}, "
                f"hpfar={hp}, par={self.par:#x})")


def translate(va: int, regs: Regs | None = None, memory: Memory | None = None,
              access: str | AccessDescriptor = "r", el: int = 1, *, pan: bool = False,
              stage1_only: bool = False, features: FeatureSet | str = "qemu-max",
              choices: ImplChoices = DEFAULT_CHOICES) -> Translation:
    """Translate va as an access from el through the regime the registers describe.

    access: "r", "w", "x" (an instruction fetch) or an AccessDescriptor. stage1_only:
    stop at the IPA. features: a preset name ("qemu-max", ...) or a FeatureSet. The
    regime is the one el translates in (EL2&0 with HCR_EL2.E2H; EL0 with E2H=TGE=1).
    ASL: AArch64.FullTranslate, AArch64.Abort (the syndrome of a fault).
    """
    sysregs, given, mem = machine(regs, memory)
    acc = access_of(access, el, pan)
    env = environment(mem, features, choices)
    run = trace_translation(sysregs, regime_for(acc.el, sysregs), va, acc, env,
                            stage1_only=stage1_only, given=given)
    return Translation(run)


def translate_many(vas: Sequence[int] | np.ndarray, regs: Regs | None = None,
                   memory: Memory | None = None, access: str | AccessDescriptor = "r",
                   el: int = 1, *, pan: bool = False, stage1_only: bool = False,
                   features: FeatureSet | str = "qemu-max",
                   choices: ImplChoices = DEFAULT_CHOICES) -> BatchResult:
    """Translate every address in vas, in order, as translate() would: arrays, not records.

    The batch engine (s2mmu.arch.batch): output addresses, fault kinds and levels, stage-2
    and S1PTW flags, attributes, permissions and PAR_EL1 per address, each equal to the
    scalar path's; descriptor updates happen in program order.

    >>> import s2mmu
    >>> r = s2mmu.translate_many([0x1000, 0x2000, 0x3008])    # MMUs off: flat
    >>> [hex(pa) for pa in r.pa.tolist()], r.fault.tolist()
    (['0x1000', '0x2000', '0x3008'], [-1, -1, -1])
    """
    sysregs, _given, mem = machine(regs, memory)
    acc = access_of(access, el, pan)
    env = environment(mem, features, choices)
    return translate_batch(sysregs, regime_for(acc.el, sysregs), vas, acc, env, stage1_only)


@dataclass(frozen=True, repr=False)
class AtInstruction:
    """What one AT instruction did: PAR_EL1, or the exception it took.

    run is its translation (None when the instruction is UNDEFINED at that EL).
    """

    op: AtOp
    va: int
    el: int
    pan: bool
    result: AtResult
    run: TranslationRun | None

    @property
    def par(self) -> int | None:
        """Return PAR_EL1 after the instruction, None when it took an exception."""
        return self.result.par if isinstance(self.result, ParResult) else None

    @property
    def pa(self) -> int | None:
        """Return the output address PAR_EL1 reports (with the VA's page offset), or None."""
        if isinstance(self.result, ParResult) and isinstance(self.result.result,
                                                             AddressDescriptor):
            return self.result.result.paddress
        return None

    @property
    def fault(self) -> FaultRecord | None:
        """Return the translation fault (reported in PAR_EL1 or taken), or None."""
        if isinstance(self.result, ParResult):
            r = self.result.result
            return r if isinstance(r, FaultRecord) else None
        return self.result.fault

    def esr(self) -> int | None:
        """Return ESR_ELx of the exception the instruction took, None if it completed."""
        return self.result.esr if isinstance(self.result, AtException) else None

    def far(self) -> int | None:
        """Return FAR_ELx of the exception, where set."""
        return self.result.far if isinstance(self.result, AtException) else None

    def hpfar(self) -> int | None:
        """Return HPFAR_EL2 of the exception, where set."""
        return self.result.hpfar if isinstance(self.result, AtException) else None

    def explain(self, walk: bool = True) -> str:
        """Return the instruction explained: its translation, then PAR_EL1 or the exception."""
        lines = explain_at_lines(self.op, self.va, self.el, self.pan, self.run, self.result,
                                 walk)
        return "\n".join(x.render() for x in lines)

    def __repr__(self) -> str:
        head = f"AtInstruction(op={self.op.name!r}, va={self.va:#x}, el={self.el}"
        if isinstance(self.result, ParResult):
            return head + f", par={self.result.par:#018x})"
        r = self.result
        far = f"{r.far:#x}" if r.far is not None else "None"
        hp = f"{r.hpfar:#x}" if r.hpfar is not None else "None"
        return head + f", taken_to={r.taken_to}, esr={r.esr:#x}, far={far}, hpfar={hp})"


def at(op: str | AtOp, va: int, regs: Regs | None = None, memory: Memory | None = None,
       el: int = 2, *, pan: bool = False, features: FeatureSet | str = "qemu-max",
       choices: ImplChoices = DEFAULT_CHOICES) -> AtInstruction:
    """Execute AT op on va from el (default EL2) with PSTATE.PAN=pan.

    op: "S1E1R", "AT S12E1W", ... or an AtOp. Registers and memory as for translate.
    ASL: AArch64.AT, AArch64.EncodePAR.
    """
    at_op = op if isinstance(op, AtOp) else AtOp.parse(op)
    if el not in (0, 1, 2, 3):
        raise InputError(f"el must be 0..3, got {el!r}")
    sysregs, given, mem = machine(regs, memory)
    env = environment(mem, features, choices)
    from s2mmu.arch.at import execute_at

    if at_undefined_reason(at_op, el, env):
        return AtInstruction(at_op, va, el, pan, execute_at(at_op, va, el, pan, sysregs, env),
                             None)
    regime, perm_el = at_regime(at_op, sysregs)
    acc = acc_at(perm_el, at_op.write, pan=at_op.pan_aware and pan)
    run = trace_translation(sysregs, regime, va, acc, env, stage1_only=at_op.stage == 1,
                            given=given)
    return AtInstruction(at_op, va, el, pan, at_outcome(run.result, va, el, env), run)


def profile(name: str) -> BehaviourProfile:
    """Return a kernel release's page-table and fault-path rules, by name ("v6.12").

    Pass it to ``s2mmu.pgtable.new_env(profile=...)`` to build stage 2s that follow that
    release; a scenario selects it with ``[kvm] profile`` or
    ``s2mmu.scenario.run_scenario(..., profile="v6.12")`` (which also selects the AT
    emulation's rules). An unknown name is an InputError listing the known ones.

    >>> import s2mmu
    >>> s2mmu.profile("v6.12").eagain_rule.name, s2mmu.profiles()[-1]
    ('HANDLE_FAULT', 'v6.19')
    """
    return behaviour_profile(name)


def profiles() -> list[str]:
    """Return the kernel releases the model follows, oldest first (`s2mmu profiles`)."""
    return list(PROFILES)
