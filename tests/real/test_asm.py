"""The guest code's instruction encodings against GNU as."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from s2mmu.real import asm
from s2mmu.real.asm import Reg

AS, OBJCOPY = "aarch64-linux-gnu-as", "aarch64-linux-gnu-objcopy"

CASES = [
    ("movz x27, #0x1234", asm.movz(27, 0x1234)),
    ("movz x27, #0x1234, lsl #16", asm.movz(27, 0x1234, 1)),
    ("movk x28, #0xbeef, lsl #32", asm.movk(28, 0xBEEF, 2)),
    ("movk x3, #0xffff, lsl #48", asm.movk(3, 0xFFFF, 3)),
    ("ldr x1, [x27]", asm.ldr(1, 27, 8)),
    ("ldr w5, [x27]", asm.ldr(5, 27, 4)),
    ("ldrh w2, [x27]", asm.ldr(2, 27, 2)),
    ("ldrb w0, [x27]", asm.ldr(0, 27, 1)),
    ("str x26, [x28]", asm.str_(26, 28, 8)),
    ("str x25, [x28, #16]", asm.str_(25, 28, 8, 16)),
    ("str w3, [x27]", asm.str_(3, 27, 4)),
    ("strh w3, [x27]", asm.str_(3, 27, 2)),
    ("strb w3, [x27]", asm.str_(3, 27, 1)),
    ("ldp w1, w2, [x27]", asm.ldp_w(1, 2, 27)),
    ("stp w1, w2, [x27]", asm.stp_w(1, 2, 27)),
    ("blr x27", asm.blr(27)),
    ("msr vbar_el1, x25", asm.msr_vbar_el1(25)),
    ("mrs x25, esr_el1", asm.mrs_esr_el1(25)),
    ("mrs x25, elr_el1", asm.mrs_elr_el1(25)),
    ("mrs x25, far_el1", asm.mrs_far_el1(25)),
    ("msr elr_el1, x30", asm.msr_elr_el1(30)),
    ("cmp x25, x27", asm.cmp(25, 27)),
    ("add x25, x25, #4", asm.add_imm(25, 25, 4)),
    ("b .", asm.b_self()),
    ("eret", asm.ERET),
    ("isb", asm.ISB),
    ("ret", asm.RET),
]


@pytest.fixture(scope="module")
def assembled(tmp_path_factory: pytest.TempPathFactory) -> list[int]:
    if shutil.which(AS) is None or shutil.which(OBJCOPY) is None:
        pytest.skip(f"{AS} is not installed (Debian: binutils-aarch64-linux-gnu)")
    d = tmp_path_factory.mktemp("asm")
    src = d / "x.s"
    # b.ne 3 instructions ahead, as the vectors use it
    src.write_text("\n".join(text for text, _ in CASES) + "\nb.ne .+12\n")
    subprocess.run([AS, "-o", str(d / "x.o"), str(src)], check=True)
    subprocess.run([OBJCOPY, "-O", "binary", str(d / "x.o"), str(d / "x.bin")], check=True)
    raw = Path(d / "x.bin").read_bytes()
    return [int.from_bytes(raw[i:i + 4], "little") for i in range(0, len(raw), 4)]


@pytest.mark.parametrize("i", range(len(CASES)), ids=[t for t, _ in CASES])
def test_encoding_matches_gnu_as(assembled: list[int], i: int) -> None:
    assert CASES[i][1] == assembled[i], f"{CASES[i][0]}: {CASES[i][1]:#x} != {assembled[i]:#x}"


def test_b_ne_forward(assembled: list[int]) -> None:
    assert asm.b_ne(3) == assembled[len(CASES)]


def test_mov_imm_skips_zero_halfwords() -> None:
    assert asm.mov_imm(1, 0x10010000) == [asm.movz(1, 0), asm.movk(1, 0x1001, 1)]
    assert len(asm.mov_imm(1, 0xFFFF_0000_0000_1234)) == 2


def test_reserved_registers_are_the_ones_the_code_uses() -> None:
    assert {Reg.DATA, Reg.TARGET, Reg.MARKER, Reg.SCRATCH, Reg.LINK} <= asm.RESERVED
    assert Reg.X1 not in asm.RESERVED
