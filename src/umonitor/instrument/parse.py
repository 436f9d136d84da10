"""C function definitions read with tree-sitter: what the rewriter needs of each.

How this works: tree-sitter's C grammar parses a file without preprocessing it, and
does not give up on what it cannot read: it marks an ERROR (or a MISSING token) and
goes on. Definitions are looked for at file level and inside ``#if`` blocks, never in a
function's body. A definition with a mark anywhere in it (a macro standing where the
grammar expects a type, a macro used as an operator in the body) is reported with the
reason it is left alone, as are old-style (K&R) parameter declarations and
non-static ``inline`` definitions (those may not call the static helpers). Offsets are
bytes of the source, lines count from 1.

This module and ``tree_sitter`` meet only here: tree-sitter's own errors (a grammar
that does not load) become one ``UsageError`` sentence.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import tree_sitter_c
from tree_sitter import Language, Node, Parser

from umonitor.errors import UsageError
from umonitor.instrument.types import Base, Shape

# Where function definitions may sit: the file and preprocessor conditionals.
_CONTAINERS = {
    "translation_unit",
    "preproc_if",
    "preproc_ifdef",
    "preproc_else",
    "preproc_elif",
    "preproc_elifdef",
    "linkage_specification",
    "declaration_list",
}
_INLINE = {"inline", "__inline", "__inline__", "__forceinline"}


@dataclass(frozen=True, slots=True)
class Param:
    """A named parameter and its type."""

    name: str
    shape: Shape


@dataclass(frozen=True, slots=True)
class Return:
    """One ``return`` statement: its bytes, and its expression's if it has one."""

    start: int
    end: int
    line: int
    end_line: int
    expr: tuple[int, int, int] | None  # start, end, line


@dataclass(frozen=True, slots=True)
class Function:
    """A function definition, or why it is left alone (``skip``)."""

    name: str
    line: int  # of the name
    skip: str | None
    inline: bool = False
    static: bool = False
    params: tuple[Param, ...] = ()
    returns_shape: Shape | None = None
    result_decl: str = ""  # a declaration of `umon_i_r` with the return type
    body_open: int = 0  # offset just after the body's "{"
    open_line: int = 0
    body_close: int = 0  # offset of the body's "}"
    close_line: int = 0
    ends_in_return: bool = False
    returns: tuple[Return, ...] = ()


@dataclass(frozen=True, slots=True)
class Unit:
    """A parsed file: its functions and the typedefs it declares."""

    functions: tuple[Function, ...]
    typedefs: dict[str, Shape]


def _parser() -> Parser:
    try:
        return Parser(Language(tree_sitter_c.language()))
    except (ValueError, TypeError) as exc:  # an ABI the installed tree-sitter cannot load
        raise UsageError(f"tree-sitter cannot load its C grammar: {exc}") from exc


def parse(source: bytes) -> Unit:
    """Every function definition of ``source`` and the typedefs declared before any.

    A macro written before a definition's type (``LZ4LIB_API int f(void)``,
    ``FORCE_INLINE void g(void)``), which the grammar cannot tell from the type, is
    taken for attributes or a storage class: it is blanked out (spaces, so offsets
    stay) in the copy that is parsed again, a macro more each round.
    """
    parser = _parser()
    work = bytearray(source)
    tree = parser.parse(bytes(work))
    for _ in range(_MACRO_ROUNDS):
        macros = [m for n in _definitions(tree.root_node) for m in _leading_macros(n)]
        if not macros:
            break
        for m in macros:
            work[m.start_byte : m.end_byte] = b" " * (m.end_byte - m.start_byte)
        tree = parser.parse(bytes(work))
    typedefs: dict[str, Shape] = {}
    functions: list[Function] = []
    for node in _definitions(tree.root_node):
        if node.type == "type_definition":
            if not node.has_error:
                _add_typedefs(node, typedefs)
        else:
            functions.append(_function(node))
    return Unit(tuple(functions), typedefs)


_MACRO_ROUNDS = 4  # macros before one definition's type, at most


def _leading_macros(node: Node) -> Iterator[Node]:
    """The name before a definition's type that must be a macro: a name the grammar
    took for the type when the type follows in an ERROR (``M int f()``), or a name
    after ``unsigned`` or ``long`` (``M\nunsigned f()`` reads as ``unsigned M``)."""
    if node.type != "function_definition":
        return
    type_node = node.child_by_field_name("type")
    if type_node is None:
        return
    after = type_node.next_sibling
    if (
        type_node.type == "type_identifier"
        and after is not None
        and after.type == "ERROR"
        and all(c.type in ("identifier", "primitive_type") for c in after.children)
    ):
        yield type_node
    elif type_node.type == "sized_type_specifier":
        named = type_node.child_by_field_name("type")
        if named is not None and named.type == "type_identifier":
            yield named


def _definitions(node: Node) -> Iterator[Node]:
    for child in node.named_children:
        if child.type in ("function_definition", "type_definition"):
            yield child
        elif child.type in _CONTAINERS:
            yield from _definitions(child)


def _text(node: Node) -> str:
    return (node.text or b"").decode("utf-8", "replace")


def _line(node: Node) -> int:
    return node.start_point.row + 1


def _base(type_node: Node | None) -> Shape:
    """The shape of a type specifier, without derivations."""
    if type_node is None:
        return Shape(Base.OTHER, ("?",))
    kind = {
        "primitive_type": Base.PRIMITIVE,
        "sized_type_specifier": Base.SIZED,
        "enum_specifier": Base.ENUM,
        "struct_specifier": Base.AGGREGATE,
        "union_specifier": Base.AGGREGATE,
        "type_identifier": Base.TYPEDEF,
    }.get(type_node.type, Base.OTHER)
    if kind is Base.SIZED:
        return Shape(kind, tuple(_text(n) for n in _leaves(type_node)))
    return Shape(kind, (_text(type_node),))


def _leaves(node: Node) -> Iterator[Node]:
    if node.child_count == 0:
        yield node
    for child in node.children:
        yield from _leaves(child)


def _derive(declarator: Node | None) -> tuple[tuple[str, ...], Node | None]:
    """A declarator's derivations (outside in) and the identifier it declares."""
    derived: list[str] = []
    node = declarator
    while node is not None:
        if node.type in ("identifier", "field_identifier", "type_identifier"):
            return tuple(derived), node
        if node.type == "pointer_declarator":
            derived.append("pointer")
        elif node.type == "array_declarator":
            derived.append("array")
        elif node.type == "function_declarator":
            derived.append("function")
        elif node.type != "parenthesized_declarator":
            return tuple(derived), None
        inner = node.child_by_field_name("declarator")
        if inner is None and node.type == "parenthesized_declarator":
            inner = node.named_children[0] if node.named_children else None
        node = inner
    return tuple(derived), None


def _add_typedefs(node: Node, typedefs: dict[str, Shape]) -> None:
    base = _base(node.child_by_field_name("type"))
    for declarator in node.children_by_field_name("declarator"):
        derived, name = _derive(declarator)
        if name is not None:
            typedefs[_text(name)] = Shape(base.base, base.words, derived)


def _function(node: Node) -> Function:
    declarator = node.child_by_field_name("declarator")
    derived, name_node = _derive(declarator)
    name = _text(name_node) if name_node is not None else "?"
    line = _line(name_node) if name_node is not None else _line(node)
    if node.has_error or name_node is None or "function" not in derived:
        bad = _first_error(node)
        where = f"line {_line(bad)}" if bad is not None else "it"
        return Function(name, line, f"the parser could not read {where} (a macro?)")
    specifiers = [c for c in node.children if c.type == "storage_class_specifier"]
    words = {_text(c) for c in specifiers}
    inline = bool(words & _INLINE)
    static = "static" in words
    if any(c.type == "declaration" for c in node.children):
        return Function(name, line, "old-style (K&R) parameter declarations")
    if inline and not static:
        return Function(name, line, "a non-static inline definition may not call static helpers")
    assert declarator is not None
    # The function's own declarator is the innermost function layer: what is outside it
    # derives the return type (`int (*f(void))(int)` returns a function pointer).
    inner = max(i for i, d in enumerate(derived) if d == "function")
    fdecl = _nth_layer(declarator, inner)
    body = node.child_by_field_name("body")
    assert body is not None
    base = _base(node.child_by_field_name("type"))
    qualifiers = [_text(c) for c in node.children if c.type == "type_qualifier"]
    type_node = node.child_by_field_name("type")
    type_text = _text(type_node) if type_node is not None else "int"  # implicit int (C89)
    decl_text = (
        _text(declarator)[: fdecl.start_byte - declarator.start_byte]
        + "umon_i_r"
        + _text(declarator)[fdecl.end_byte - declarator.start_byte :]
    )
    statements = [c for c in body.named_children if c.type != "comment"]
    return Function(
        name,
        line,
        None,
        inline=inline,
        static=static,
        params=_params(fdecl),
        returns_shape=Shape(base.base, base.words, derived[:inner]),
        result_decl=" ".join([*qualifiers, type_text, decl_text]),
        body_open=body.start_byte + 1,
        open_line=_line(body),
        body_close=body.end_byte - 1,
        close_line=body.end_point.row + 1,
        ends_in_return=bool(statements) and statements[-1].type == "return_statement",
        returns=tuple(_returns(body)),
    )


def _first_error(node: Node) -> Node | None:
    if node.is_error or node.is_missing:
        return node
    for child in node.children:
        if child.has_error or child.is_missing:
            found = _first_error(child)
            if found is not None:
                return found
    return None


def _nth_layer(declarator: Node, n: int) -> Node:
    """The declarator node of the n-th derivation (outside in)."""
    node = declarator
    seen = -1
    while True:
        if node.type != "parenthesized_declarator":
            seen += 1
            if seen == n:
                return node
        inner = node.child_by_field_name("declarator")
        if inner is None:
            inner = node.named_children[0]
        node = inner


def _params(fdecl: Node) -> tuple[Param, ...]:
    plist = fdecl.child_by_field_name("parameters")
    out: list[Param] = []
    for p in plist.named_children if plist is not None else ():
        if p.type != "parameter_declaration":
            continue  # `...`, comments
        derived, name = _derive(p.child_by_field_name("declarator"))
        if name is None:
            continue  # `void`, or an unnamed parameter
        base = _base(p.child_by_field_name("type"))
        out.append(Param(_text(name), Shape(base.base, base.words, derived)))
    return tuple(out)


def _returns(node: Node) -> Iterator[Return]:
    for child in node.named_children:
        if child.type == "return_statement":
            exprs = [c for c in child.named_children if c.type != "comment"]
            expr = (exprs[0].start_byte, exprs[0].end_byte, _line(exprs[0])) if exprs else None
            yield Return(
                child.start_byte, child.end_byte, _line(child), child.end_point.row + 1, expr
            )
        elif child.type not in ("function_definition",):
            yield from _returns(child)
