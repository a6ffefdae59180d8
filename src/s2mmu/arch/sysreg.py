"""System-register declarations as tables of fields, and the frozen views they decode to.

Each register is declared once, in Arm's field names (as the kernel's
arch/arm64/tools/sysreg does): ``Field(5, 0, "T0SZ")``, ``Res0(63, 46)``, enumerated
fields with their encodings. A view keeps the raw value, so decoding round-trips.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from s2mmu.arch.bits import bits, mask, set_bits
from s2mmu.arch.errors import InputError
from s2mmu.arch.inputs import shorten, shorten_hex


@dataclass(frozen=True)
class Field:
    """A named field value<hi:lo>, optionally with named encodings (value -> meaning).

    feature: the field exists only when that FEAT_* is implemented; otherwise its bits
    are ``absent`` ("RES0" or "RES1"), as the Arm ARM's "When FEAT_x is implemented: ...
    Otherwise: Reserved, RES1." field descriptions say.
    """

    hi: int
    lo: int
    name: str
    enum: Mapping[int, str] = field(default_factory=dict)
    feature: str = ""
    absent: str = "RES0"

    @property
    def width(self) -> int:
        return self.hi - self.lo + 1


@dataclass(frozen=True)
class Res0:
    """Bits hi..lo that are RES0."""

    hi: int
    lo: int


@dataclass(frozen=True)
class Res1:
    """Bits hi..lo that are RES1."""

    hi: int
    lo: int


Item = Field | Res0 | Res1


@dataclass(frozen=True)
class FieldDecode:
    """One field of a decoded value: where it is, what it holds, what that means.

    valid is False where the bits carry no information in this context: reserved
    (RES0/RES1) bits, a field whose feature is not implemented, a syndrome field its
    valid bit (ESR ISV) says is not valid, a reserved encoding.
    """

    name: str
    hi: int
    lo: int
    value: int
    meaning: str
    valid: bool = True


@dataclass(frozen=True)
class RegisterSpec:
    """A register (or a register layout) declared as a table of fields."""

    name: str
    items: tuple[Item, ...]
    width: int = 64

    def __post_init__(self) -> None:
        ordered = tuple(i for i in sorted(self.items, key=lambda i: -i.hi)
                        if isinstance(i, Field))
        object.__setattr__(self, "_ordered", ordered)
        object.__setattr__(self, "_by_name", {f.name: f for f in ordered})

    def fields(self) -> Iterator[Field]:
        """Yield the named fields, most significant first."""
        ordered: tuple[Field, ...] = self.__dict__["_ordered"]
        return iter(ordered)

    def items_in_order(self) -> list[Item]:
        """Return every item (fields and reserved ranges), most significant first."""
        return sorted(self.items, key=lambda i: -i.hi)

    def field(self, name: str) -> Field:
        """Return the field called name."""
        by_name: dict[str, Field] = self.__dict__["_by_name"]
        try:
            return by_name[name]
        except KeyError:
            raise KeyError(f"{self.name} has no field {name}") from None

    def res1_mask(self) -> int:
        """Return the mask of RES1 bits."""
        return sum((mask(i.hi, i.lo) for i in self.items if isinstance(i, Res1)), 0)

    def res0_mask(self) -> int:
        """Return the mask of RES0 bits."""
        return sum((mask(i.hi, i.lo) for i in self.items if isinstance(i, Res0)), 0)

    def decode(self, value: int) -> RegView:
        """Return the frozen view of value."""
        if value < 0 or value >> self.width:
            raise InputError(f"{self.name}: value {shorten_hex(value)} does not fit in "
                             f"{self.width} bits")
        return RegView(self, value)

    def encode(self, **fields: int) -> int:
        """Return the value with the given fields set and RES1 bits set."""
        value = self.res1_mask()
        for name, v in fields.items():
            if name not in self.__dict__["_by_name"]:
                raise InputError(f"{self.name} has no field {shorten(name)}")
            f = self.field(name)
            if not 0 <= v < 1 << f.width:
                raise InputError(f"{self.name}.{name}={shorten_hex(v)}: the field is "
                                 f"{f.width} bits ([{f.hi}:{f.lo}])")
            value = set_bits(value, f.hi, f.lo, v)
        return value


@dataclass(frozen=True)
class RegView:
    """A decoded register value: the raw value plus access to each field by name."""

    spec: RegisterSpec
    value: int

    def __getattr__(self, name: str) -> int:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            f = self.spec.field(name)
        except KeyError as e:
            raise AttributeError(str(e)) from None
        return bits(self.value, f.hi, f.lo)

    def get(self, name: str) -> int:
        """Return the field called name."""
        f = self.spec.field(name)
        return bits(self.value, f.hi, f.lo)

    def describe(self) -> list[tuple[str, int, int, int, str]]:
        """Return (name, hi, lo, value, meaning) for every field, most significant first.

        A field that exists only with some FEAT_* is left out: without a feature set the
        view cannot say whether those bits are that field or reserved (see
        s2mmu.arch.regdecode.decode_register for the decode that knows).
        """
        out = []
        for f in self.spec.fields():
            if f.feature:
                continue
            v = bits(self.value, f.hi, f.lo)
            out.append((f.name, f.hi, f.lo, v, f.enum.get(v, "")))
        return out

    def res0_violations(self) -> int:
        """Return the RES0 bits that are set."""
        return self.value & self.spec.res0_mask()
