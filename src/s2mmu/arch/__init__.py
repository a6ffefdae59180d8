"""The architecture: Arm's VMSAv8-64 two-stage translation, AT instructions and faults.

Registers go in as raw values (:class:`SysRegs`, defaults MMUs off) and are read once
into walk parameters; memory is a sparse :class:`PhysMem` (tables laid out by hand or
with :class:`TableBuilder`); features and IMPLEMENTATION DEFINED choices are inputs
(:class:`FeatureSet` presets, :class:`ImplChoices`). Translation returns an
:class:`AddressDescriptor` or a :class:`FaultRecord` (faults are values);
:func:`trace_translation` records a whole run and :func:`explain_text` renders it level
by level. ``s2mmu.translate`` and ``s2mmu.at`` wrap all of this in one call.

>>> from s2mmu import arch
>>> mem = arch.PhysMem()
>>> tables = arch.TableBuilder(mem, arch.BumpAllocator(0x1000_0000, 0x1010_0000),
...                            arch.Granule.G4K, iasize=48, startlevel=0)
>>> tables.map(0x40_0000, 0x8000_0000, 0x1000, arch.s1_attrs(ro=True))
>>> regs = arch.SysRegs(SCTLR_EL1=0x30D00805, TCR_EL1=0x500803510, MAIR_EL1=0xFF,
...                     TTBR0_EL1=tables.root)
>>> env = arch.Env(mem, arch.qemu_7_2_max())
>>> arch.full_translate(regs, arch.Regime.EL10, 0x40_0123, arch.acc_gpr(1, False), env)
... # doctest: +ELLIPSIS
AddressDescriptor(vaddress=0x400123, paddress=0x80000123, memattrs=...)
>>> fault = arch.full_translate(regs, arch.Regime.EL10, 0x40_0123, arch.acc_gpr(1, True), env)
>>> fault.statuscode, fault.level, hex(arch.taken_abort(fault, 0x40_0123, el=1).esr)
(<Fault.PERMISSION: 'Permission'>, 3, '0x9600004f')
>>> hex(arch.execute_at(arch.AtOp.S1E1W, 0x40_0123, 2, False, regs, env).par)
'0x81f'
"""

from s2mmu.arch.access import AccessDescriptor, AccessType, acc_at, acc_gpr, acc_ifetch
from s2mmu.arch.at import AtException, AtOp, ParResult, encode_par, execute_at
from s2mmu.arch.attrs import MemoryAttributes
from s2mmu.arch.builder import BumpAllocator, TableBuilder, s1_attrs, s2_attrs
from s2mmu.arch.config import DEFAULT_CHOICES, ImplChoices
from s2mmu.arch.errors import InputError
from s2mmu.arch.explain import (
    ExplainLine,
    LineKind,
    TranslationRun,
    explain_lines,
    explain_text,
    trace_translation,
)
from s2mmu.arch.faults import Fault, FaultRecord, esr_abort, fsc, hpfar, par_fault
from s2mmu.arch.features import PRESETS, FeatureSet, qemu_7_2_max
from s2mmu.arch.memory import MemoryWrite, PhysMem
from s2mmu.arch.params import Granule, get_s1_ttw_params, get_s2_ttw_params
from s2mmu.arch.reprs import hex_repr
from s2mmu.arch.state import Regime, SysRegs, regime_for
from s2mmu.arch.syndrome import TakenAbort, taken_abort
from s2mmu.arch.translate import AddressDescriptor, Env, full_translate, stage2_lookup
from s2mmu.arch.walk import WalkStep

__all__ = [
    "DEFAULT_CHOICES",
    "PRESETS",
    "AccessDescriptor",
    "AccessType",
    "AddressDescriptor",
    "AtException",
    "AtOp",
    "BumpAllocator",
    "Env",
    "ExplainLine",
    "Fault",
    "FaultRecord",
    "FeatureSet",
    "Granule",
    "ImplChoices",
    "InputError",
    "LineKind",
    "MemoryAttributes",
    "MemoryWrite",
    "ParResult",
    "PhysMem",
    "Regime",
    "SysRegs",
    "TableBuilder",
    "TakenAbort",
    "TranslationRun",
    "WalkStep",
    "acc_at",
    "acc_gpr",
    "acc_ifetch",
    "encode_par",
    "esr_abort",
    "execute_at",
    "explain_lines",
    "explain_text",
    "fsc",
    "full_translate",
    "get_s1_ttw_params",
    "get_s2_ttw_params",
    "hex_repr",
    "hpfar",
    "par_fault",
    "qemu_7_2_max",
    "regime_for",
    "s1_attrs",
    "s2_attrs",
    "stage2_lookup",
    "taken_abort",
    "trace_translation",
]
