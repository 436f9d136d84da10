"""How a parameter or return value is written into a record, decided from its C type.

A type arrives as a ``Shape``: its base specifier (``int``, ``unsigned long``, ``struct
s``, a typedef name) and the declarator's derivations from the outside in (``*``,
``[]``, ``()``), as C reads them: ``char *argv[]`` is an array (innermost) of pointers
to char. A parameter's array or function type is a pointer after decay. Typedefs of the
same file resolve to their shapes; other typedef names whose meaning the rewriter
cannot see are left to ``UMON_I_ANY``, which the compiler resolves with ``_Generic``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass


class Format(enum.Enum):
    """The helper of umonitor_instrument.h that writes a value (``VOID``: no value)."""

    SIGNED = "signed"  # decimal, through long long
    UNSIGNED = "unsigned"  # decimal, through unsigned long long
    FLOAT = "float"  # %g, through double
    STRING = "string"  # a char pointer: its first bytes, or NULL
    POINTER = "pointer"  # %p of the value
    FUNCTION = "function"  # %p of a function pointer (copied, not converted)
    ADDRESS = "address"  # %p of the value's address: a struct or union by value
    ANY = "any"  # decided by the compiler (UMON_I_ANY)
    VOID = "void"


class Base(enum.Enum):
    """What kind of specifier a type starts from."""

    PRIMITIVE = "primitive"  # int, char, double, size_t, uint32_t, bool, void
    SIZED = "sized"  # unsigned, long long, signed char, long double
    ENUM = "enum"
    AGGREGATE = "aggregate"  # struct or union
    TYPEDEF = "typedef"  # a name
    OTHER = "other"  # anything the grammar gives otherwise (a macro, typeof)


@dataclass(frozen=True, slots=True)
class Shape:
    """A C type as written: base specifier, its words, and derivations outside in."""

    base: Base
    words: tuple[str, ...]
    derived: tuple[str, ...] = ()  # "pointer", "array", "function"


# Names tree-sitter's grammar reads as primitive types besides the keywords.
_SIGNED_NAMES = {"ssize_t", "ptrdiff_t", "intptr_t", "intmax_t", "off_t", "time_t", "pid_t"}
_SIGNED_NAMES |= {f"int{n}_t" for n in (8, 16, 32, 64)}
_SIGNED_NAMES |= {f"int_{kind}{n}_t" for kind in ("least", "fast") for n in (8, 16, 32, 64)}
_UNSIGNED_NAMES = {"size_t", "uintptr_t", "uintmax_t", "bool", "_Bool", "char16_t", "char32_t"}
_UNSIGNED_NAMES |= {f"uint{n}_t" for n in (8, 16, 32, 64)}
_UNSIGNED_NAMES |= {f"uint_{kind}{n}_t" for kind in ("least", "fast") for n in (8, 16, 32, 64)}
_FLOAT_NAMES = {"float", "double"}
_KNOWN_NAMES = _SIGNED_NAMES | _UNSIGNED_NAMES
_SIGNED_KEYWORDS = {"char", "int", "short", "long", "signed"}


def classify(shape: Shape, typedefs: Mapping[str, Shape], *, parameter: bool) -> Format:
    """The format of a value of type ``shape`` (``parameter``: arrays and functions
    decay to pointers, as they do in a parameter list)."""
    shape = _resolve(shape, typedefs)
    if shape.derived:
        top, pointee = shape.derived[-1], shape.derived[:-1]
        if top == "function":
            return Format.FUNCTION if parameter else Format.ANY
        if top == "array" and not parameter:
            return Format.ANY
        if top == "pointer" and pointee and pointee[-1] == "function":
            return Format.FUNCTION
        if top == "pointer" and not pointee and _is_plain_char(shape):
            return Format.STRING
        return Format.POINTER
    return _scalar(shape)


def _resolve(shape: Shape, typedefs: Mapping[str, Shape]) -> Shape:
    """Typedef names replaced by what they name, as far as this file says."""
    seen: set[str] = set()
    while shape.base is Base.TYPEDEF and shape.words[0] in typedefs:
        name = shape.words[0]
        if name in seen:
            break
        seen.add(name)
        named = typedefs[name]
        shape = Shape(named.base, named.words, named.derived + shape.derived)
    if shape.base is Base.TYPEDEF and shape.words[0] in _KNOWN_NAMES:  # `_Bool`, `off_t`
        shape = Shape(Base.PRIMITIVE, shape.words, shape.derived)
    return shape


def _is_plain_char(shape: Shape) -> bool:
    return shape.base is Base.PRIMITIVE and shape.words == ("char",)


def _scalar(shape: Shape) -> Format:
    words = set(shape.words)
    if shape.base is Base.ENUM:
        return Format.SIGNED
    if shape.base is Base.AGGREGATE:
        return Format.ADDRESS
    if shape.base is Base.PRIMITIVE:
        (name,) = shape.words
        if name == "void":
            return Format.VOID
        if name in _FLOAT_NAMES:
            return Format.FLOAT
        if name in _UNSIGNED_NAMES:
            return Format.UNSIGNED
        if name in _SIGNED_NAMES or name in _SIGNED_KEYWORDS:
            return Format.SIGNED
        return Format.ANY
    if shape.base is Base.SIZED:
        if words & _FLOAT_NAMES:
            return Format.FLOAT
        if "unsigned" in words:
            return Format.UNSIGNED
        if words <= _SIGNED_KEYWORDS:
            return Format.SIGNED
        return Format.ANY
    return Format.ANY
