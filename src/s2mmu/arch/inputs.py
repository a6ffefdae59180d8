"""Bounded input: the one layer every file loader and option parser goes through.

A file or an option is refused, as one line naming the field, the rule and a shortened
value, when it breaks one of the documented limits below. The limits that protect the
parsers themselves (nesting depth, digits of a number) are checked by a cheap scan of
the text BEFORE json/tomllib see it: both parsers recurse once per nesting level (a few
thousand levels exhaust Python's stack) and Python refuses to convert a decimal string
of more than 4,300 digits to an int (sys.get_int_max_str_digits), so neither may be
handed such a text. String lengths are checked on the parsed value.

Every refusal goes through :func:`shorten` (values) and :func:`escape` (file names and
text): a message is one line, whatever the input holds.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from s2mmu.arch.errors import InputError

MAX_DEPTH = 32
"""Deepest nesting of arrays/objects (JSON) or arrays/inline tables (TOML) read."""
MAX_INT_DIGITS = 64
"""Most digits of one number (prefix and '_' not counted): a 64-bit value in binary."""
MAX_STRING_CHARS = 1 << 20
"""Most characters of one string or key (a hex `bytes` string of 512 KiB fits)."""
MAX_FILE_BYTES = 64 << 20
"""Largest input file read."""
SHOWN_CHARS = 40
"""Longest value shown whole in a message; longer ones keep their two ends."""
SHOWN_ENDS = 4
"""Digits (or characters) kept at each end of a shortened value."""
MAX_MESSAGE_CHARS = 1000
"""Longest message line; a longer one keeps its start and says how long it was."""

_PREFIX = {"0x": 16, "0o": 8, "0b": 2}


def escape(text: str) -> str:
    """Return text with control and other unprintable characters escaped (one line).

    A newline becomes the two characters backslash, n; others \\xNN, \\uNNNN or
    \\UNNNNNNNN, as Python spells them.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)


def _escape_char(c: str) -> str:
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    if c in named:
        return named[c]
    code = ord(c)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _digit_text(digits: str, prefix: str = "") -> str:
    """Return a run of digits whole, or its two ends and how many digits it has."""
    if len(digits) <= SHOWN_CHARS:
        return prefix + digits
    return f"{prefix}{digits[:SHOWN_ENDS]}...{digits[-SHOWN_ENDS:]} ({len(digits)} digits)"


def shorten(value: object) -> str:
    """Return value for a one-line message: its repr, escaped, long values cut to their ends.

    Integers keep their decimal repr ("1111...1111 (5000 digits)") unless too long for
    one (then hex); strings are quoted and escaped ("'abcdefgh...stuvwxyz' (100000
    characters)"); a long list or table is its type and size.
    """
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        if value.bit_length() > 3 * (sys.get_int_max_str_digits() or 1 << 20):
            return shorten_hex(value)  # str() would refuse it (or take quadratic time)
        return ("-" if value < 0 else "") + _digit_text(str(abs(value)))
    if isinstance(value, str):
        return _short_chars(repr(value))
    if isinstance(value, list | tuple | dict):
        if len(value) > SHOWN_CHARS:
            return f"a {type(value).__name__} of {len(value)} items"
    try:
        text = repr(value)
    except ValueError:  # an int too long for decimal, inside a container
        return f"a {type(value).__name__}"
    return _short_chars(escape(text))


def shorten_hex(value: int) -> str:
    """Return an integer in hex for a message, cut to its ends: "0x1111...1111 (5000 digits)"."""
    return ("-" if value < 0 else "") + _digit_text(f"{abs(value):x}", "0x")


def _short_chars(text: str) -> str:
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:SHOWN_ENDS * 2]}...{text[-SHOWN_ENDS * 2:]} ({len(text)} characters)"


_LONG_NUMBER = re.compile(r"(?<![\w])(0[xXoObB])?([0-9A-Fa-f_]{" + str(SHOWN_CHARS + 1)
                          + r",})(?![\w])")


def one_line(message: str) -> str:
    """Return message as one bounded line: escaped, long numbers and the tail cut.

    The last guard before a message is printed; refusals already use shorten().
    """
    text = _LONG_NUMBER.sub(lambda m: _digit_text(m.group(2).replace("_", ""),
                                                  m.group(1) or ""), escape(message))
    if len(text) > MAX_MESSAGE_CHARS:
        return f"{text[:MAX_MESSAGE_CHARS]}... ({len(text)} characters)"
    return text


# --- integers given as text ---------------------------------------------------------------


def int_of_text(text: str, field: str) -> int:
    """Return the integer a "0x..."/"0o..."/"0b..."/decimal text spells ('_' allowed).

    Raise InputError naming field when it is not an integer or has more than
    MAX_INT_DIGITS digits (checked before int(), which refuses decimal strings of more
    than 4,300 digits with a ValueError).
    """
    body = text.strip().replace("_", "")
    sign = ""
    if body[:1] in ("+", "-"):
        sign, body = body[:1], body[1:]
    base = _PREFIX.get(body[:2].lower(), 10)
    prefix, digits = (body[:2], body[2:]) if base != 10 else ("", body)
    why = too_many_digits(digits, prefix)
    if why:
        raise InputError(f"{field}: {sign}{why}")
    if digits.isascii() and digits.isalnum():
        try:
            return int(sign + digits, base)
        except ValueError:
            pass
    raise InputError(f"{field}: expected an integer (number, \"0x...\" or \"123\"), "
                     f"got {shorten(text)}")


_SIZE_TEXT = re.compile(r"(\d+)\s*([KMGT])i?B?")
SIZE_UNITS = {"K": 10, "M": 20, "G": 30, "T": 40}


def size_of_text(text: str) -> int | None:
    """Return the bytes a size like "4K", "2M", "1GiB" spells, or None if text is not one.

    Raise InputError (the rule only, no field) when its number has more than
    MAX_INT_DIGITS digits: the caller names the field.
    """
    m = _SIZE_TEXT.fullmatch(text.strip())
    if m is None:
        return None
    why = too_many_digits(m.group(1))
    if why:
        raise InputError(why)
    return int(m.group(1)) << SIZE_UNITS[m.group(2)]


def too_many_digits(digits: str, prefix: str = "") -> str | None:
    """Return why a run of digits is refused (more than MAX_INT_DIGITS), or None."""
    if len(digits) <= MAX_INT_DIGITS:
        return None
    return (f"{_digit_text(digits, prefix)} has more than {MAX_INT_DIGITS} digits "
            f"(MAX_INT_DIGITS)")


def range_beyond(start: int, size: int, bits: int) -> bool:
    """Return whether start..start+size reaches beyond a 2^bits space."""
    return start + size > 1 << bits


# --- scanning a text before parsing it ----------------------------------------------------

_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]|[0-9]{'
                          + str(MAX_INT_DIGITS + 1) + ",}")
_TOML_TOKENS = re.compile(
    r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"[^"\\\n]*(?:\\.[^"\\\n]*)*"|\'[^\'\n]*\'|#[^\n]*'
    r"|[\[\]{}]|(?<![\w.-])[+-]?[0-9][0-9A-Za-z_]{" + str(MAX_INT_DIGITS) + ",}")
_JSON_KEY = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:')
_TOML_KEY = re.compile(r"\s*([A-Za-z0-9_.\-\"' ]+?)\s*=")
_TOML_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-]+)\s*\]", re.MULTILINE)


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _field_at(text: str, pos: int, toml: bool) -> str:
    """Return the key nearest before pos (the field a number or a bracket belongs to)."""
    if toml:
        start = text.rfind("\n", 0, pos) + 1
        m = _TOML_KEY.match(text, start, pos)
        key = m.group(1).strip().strip("\"'") if m else ""
        headers = list(_TOML_HEADER.finditer(text, 0, start))
        table = ""
        if headers:
            kind, table = headers[-1].groups()
            if kind == "[[":
                n = sum(1 for h in headers if h.groups() == (kind, table))
                table = f"{table}[{n - 1}]"
        name = ".".join(x for x in (table, key) if x)
        return escape(name) + ": " if name else ""
    keys = _JSON_KEY.findall(text, max(0, pos - 4096), pos)
    return escape(keys[-1]) + ": " if keys else ""


def scan_text(text: str, source: str, syntax: str) -> bool:
    """Refuse a JSON or TOML text nested deeper than MAX_DEPTH or with a number of more
    than MAX_INT_DIGITS digits, before a parser sees it.

    Strings and (TOML) comments are skipped, so brackets and digits inside them count
    for nothing. source names the text in messages ("file:line: field: why"). Return
    whether a string is written with more than MAX_STRING_CHARS characters (escapes
    included): only then need the parsed value go through check_strings.
    """
    toml = syntax == "toml"
    depth = 0
    long_strings = False
    for m in (_TOML_TOKENS if toml else _JSON_TOKENS).finditer(text):
        tok = m.group()
        if tok in ("[", "{"):
            depth += 1
            if depth > MAX_DEPTH:
                raise InputError(f"{escape(source)}:{_line(text, m.start())}: "
                                 f"{_field_at(text, m.start(), toml)}nested deeper than "
                                 f"{MAX_DEPTH} levels of arrays and "
                                 f"{'tables' if toml else 'objects'} (MAX_DEPTH)")
        elif tok in ("]", "}"):
            depth -= 1
        elif tok[0] in "\"'":
            long_strings = long_strings or len(tok) > MAX_STRING_CHARS
        elif tok[0] != "#":
            _scan_number(text, m.start(), tok, source, toml)
    return long_strings


def _scan_number(text: str, pos: int, tok: str, source: str, toml: bool) -> None:
    body = tok.lstrip("+-").replace("_", "")
    prefix = body[:2] if body[:2].lower() in _PREFIX else ""
    digits = body[len(prefix):]
    why = too_many_digits(digits, prefix)
    if why:
        raise InputError(f"{escape(source)}:{_line(text, pos)}: {_field_at(text, pos, toml)}"
                         f"the number {why}")


def check_strings(value: Any, source: str) -> None:
    """Refuse a parsed value holding a string or key longer than MAX_STRING_CHARS.

    One pass over the value without building paths; the path of a refused string is
    found only then. Its nesting is bounded by scan_text, so the search's recursion is.
    """
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if len(v) > MAX_STRING_CHARS:
                where = _path_of(value, v, "") or "(top)"
                raise InputError(f"{escape(source)}: {escape(where)}: a string of {len(v)} "
                                 f"characters is longer than {MAX_STRING_CHARS} "
                                 f"(MAX_STRING_CHARS): {shorten(v)}")
        elif isinstance(v, Mapping):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(x for x in v if isinstance(x, str | list | Mapping))


def _path_of(value: Any, target: str, path: str) -> str | None:
    """Return the path ("cases[0].name") of target (a key names its table) in value."""
    if value is target:
        return path
    if isinstance(value, Mapping):
        for k, v in value.items():
            if k is target:
                return path
            found = _path_of(v, target, f"{path}.{k}" if path else str(k))
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _path_of(v, target, f"{path}[{i}]")
            if found is not None:
                return found
    return None


# --- files --------------------------------------------------------------------------------


def read_text(path: str | Path, source: str | None = None) -> str:
    """Return a file's UTF-8 text; refuse, in one line, one that cannot be read, is
    larger than MAX_FILE_BYTES or is not UTF-8."""
    name = escape(source if source is not None else str(path))
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InputError(f"{name}: a file of {size} bytes is larger than "
                             f"{MAX_FILE_BYTES} (MAX_FILE_BYTES)")
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"{name}: cannot read: {e.strerror or e}") from None
    return decode_utf8(data, name)


def decode_utf8(data: bytes, name: str) -> str:
    """Return data as text, or refuse it naming the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{escape(name)}: not UTF-8 text (byte {e.start}: "
                         f"{data[e.start]:#04x})") from None


def loads_json(text: str, source: str) -> Any:
    """Return the JSON value of text, scanned before and checked after parsing."""
    long_strings = scan_text(text, source, "json")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{escape(source)}:{e.lineno}: not valid JSON (column {e.colno}: "
                         f"{e.msg})") from None
    if long_strings:
        check_strings(value, source)
    return value


def load_json(path: str | Path, source: str | None = None) -> Any:
    """Return the JSON value of a file, through every check of this module."""
    name = source if source is not None else str(path)
    return loads_json(read_text(path, name), name)


def loads_toml(text: str, source: str) -> dict[str, Any]:
    """Return the TOML document of text, scanned before and checked after parsing."""
    long_strings = scan_text(text, source, "toml")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise InputError(f"{escape(source)}:{m.group(1) if m else 1}: not valid TOML: "
                         f"{escape(str(e))}") from None
    if long_strings:
        check_strings(data, source)
    return data
