"""A QEMU the conformance harness runs against: its binary, its CPU, the model's features.

    target = qemu_target("10.0")          # or "7.2", or a path
    target.features()                     # each translation feature: field value, implemented
    report = compare_cases(generate_cases(300, 7, None, target.model_features()),
                           target.config(jobs=2), model_with(target.model_features()),
                           target.series)

The model runs with the features the QEMU's `-cpu max` reports in its ID registers (read by
the probe, cpu_id.py), the generator draws only features it has, and a difference is
excused only by a departure measured on that QEMU series (divergences.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from s2mmu.arch.features import FeatureSet
from s2mmu.conformance.cpu_id import (
    CpuFeature,
    IdRegisters,
    cpu_features,
    qemu_model_features,
    read_id_registers,
)
from s2mmu.conformance.qemu import QemuConfig
from s2mmu.conformance.qemu_binary import SERIES, QemuBinary, qemu_binary

ALL = "all"
"""--qemu all: every series the project measures (qemu_binary.SERIES)."""


@dataclass(frozen=True)
class QemuTarget:
    """A QEMU to compare with: the binary and its -cpu max ID registers."""

    binary: QemuBinary
    id_registers: IdRegisters
    cache_dir: Path | None = None

    @property
    def series(self) -> str:
        """Return the QEMU series ("10.0"), which selects the departures excused."""
        return self.binary.series

    def features(self) -> tuple[CpuFeature, ...]:
        """Return each translation feature as the ID registers report it."""
        return cpu_features(self.id_registers)

    def model_features(self) -> FeatureSet:
        """Return the FeatureSet the model runs with against this QEMU."""
        return qemu_model_features(self.binary, self.cache_dir)

    def config(self, jobs: int = 1) -> QemuConfig:
        """Return the harness configuration that runs this QEMU."""
        return QemuConfig(jobs=jobs, cache_dir=self.cache_dir,
                          argv_prefix=self.binary.argv_prefix)


def qemu_target(spec: str = "7.2", cache_dir: Path | None = None) -> QemuTarget:
    """Return the target for "7.2", "10.0" or a path (fetching 10.0 if needed).

    Raises qemu_binary.QemuUnavailable or qemu.HarnessUnavailable with a one-line reason.
    """
    binary = qemu_binary(spec, cache_dir)
    return QemuTarget(binary, read_id_registers(binary, cache_dir), cache_dir)


def expand_specs(specs: Sequence[str]) -> list[str]:
    """Return the --qemu values with "all" expanded and repeats dropped, in order."""
    out: list[str] = []
    for spec in specs:
        for one in (SERIES if spec == ALL else (spec,)):
            if one not in out:
                out.append(one)
    return out
