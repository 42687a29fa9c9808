"""matchbox's template language: the part of Go's ``text/template`` that matchbox users
write, parsed once and rendered natively. Pure.

matchbox renders Ignition (Butane) and generic templates with Go's ``text/template`` and
``missingkey=error`` against a map built from the group's metadata, its selectors and the
request (``.request.query``, ``.request.raw_query``). This module implements that subset:

- text and actions ``{{ ... }}`` with trim markers ``{{-`` and ``-}}``, comments ``{{/* */}}``;
- field chains on maps (``.a.b``, ``$.a``, ``$var.a``, ``(pipeline).a``); a missing key is
  an error, as with ``missingkey=error``;
- ``if``/``else if``/``else``, ``range`` (with ``else``, ``$i, $e :=``, ``break``,
  ``continue``), ``with``/``else``, variables (``$x := ...``, ``$x = ...``);
- pipelines with Go's built-in functions: ``and or not len index slice print printf println
  eq ne lt le gt ge html js urlquery`` (matchbox registers no others).

Values are what JSON decoding gives Go: numbers in data are float64 and print as Go prints
them (``1e+06``), numbers written in a template are ints, and comparing the two is an
error as in Go. ``define``, ``template`` and ``block`` are refused when the file is parsed.
Errors carry the file's line number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import quote_plus


class GoTemplateError(ValueError):
    """A template could not be parsed or rendered; ``str()`` starts with ``source:line:``."""


# --- values ---------------------------------------------------------------------------------


class _Nil:
    """Go's nil interface value (a missing ``index`` entry, JSON null)."""

    def __repr__(self) -> str:
        return "<no value>"


NIL = _Nil()


class StringMap(dict[str, str]):
    """A Go ``map[string]string`` (matchbox's ``.request.query``): ``index`` of a missing
    key gives the zero value ``""``, where a ``map[string]interface{}`` gives nil."""


def go_json(value: Any) -> Any:
    """JSON data as Go's encoding/json gives it to matchbox: every number a float64."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return [go_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): go_json(v) for k, v in value.items()}
    return value


def go_float(value: float) -> str:
    """A float64 as Go's ``%v`` prints it (``strconv.FormatFloat(v, 'g', -1, 64)``): the
    shortest digits, in ``%e`` form when the decimal exponent is below -4 or at least 6
    (``1e+06``, ``1.234567e+06``, ``1e-05``), else plain (``123456``, ``0.0001``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits)).rstrip("0") or "0"
    exponent += len("".join(map(str, digits))) - len(text)
    point = len(text) + exponent  # position of the decimal point
    exp10 = point - 1
    prefix = "-" if sign else ""
    if exp10 < -4 or exp10 >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{text}"
    if point >= len(text):
        return f"{prefix}{text}{'0' * (point - len(text))}"
    return f"{prefix}{text[:point]}.{text[point:]}"


def go_string(value: Any) -> str:
    """``fmt``'s ``%v`` for the values templates see."""
    if value is NIL or value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        inner = " ".join(f"{go_string(k)}:{go_string(value[k])}" for k in sorted(value, key=str))
        return f"map[{inner}]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_string(v) for v in value) + "]"
    return str(value)


def _printed(value: Any) -> str:
    """What ``{{pipeline}}`` writes: like %v, but a nil interface prints ``<no value>``."""
    if value is NIL or value is None:
        return "<no value>"
    return go_string(value)


def truth(value: Any) -> bool:
    """Go template truth: false, 0, nil and empty strings, lists and maps are false."""
    if value is NIL or value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, (str, Mapping, list, tuple)):
        return len(value) > 0
    return True


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if value is NIL or value is None:
        return "nil"
    return "other"


def _type_name(value: Any) -> str:
    return {
        "bool": "bool",
        "int": "int",
        "float": "float64",
        "string": "string",
        "nil": "<nil>",
    }.get(_kind(value), "map" if isinstance(value, Mapping) else "slice")


# --- functions ------------------------------------------------------------------------------


class _FuncError(ValueError):
    pass


def _eq(first: Any, *others: Any) -> bool:
    if not others:
        raise _FuncError("missing argument for comparison")
    k1 = _kind(first)
    for other in others:
        k2 = _kind(other)
        if k1 == "nil" or k2 == "nil":
            if k1 == k2:
                return True
            continue
        if k1 == "other" or k2 == "other":
            raise _FuncError("non-comparable type")
        if k1 != k2:
            raise _FuncError("incompatible types for comparison")
        if first == other:
            return True
    return False


def _ordered(a: Any, b: Any) -> tuple[Any, Any]:
    k1, k2 = _kind(a), _kind(b)
    if k1 not in ("int", "float", "string") or k2 not in ("int", "float", "string"):
        raise _FuncError("invalid type for comparison")
    if k1 != k2:
        raise _FuncError("incompatible types for comparison")
    return a, b


def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(item, Mapping):
            if not isinstance(key, str):
                raise _FuncError(f"value has type {_type_name(key)}; should be string")
            item = item.get(key, "" if isinstance(item, StringMap) else NIL)
        elif isinstance(item, (list, tuple, str)):
            if isinstance(key, bool) or not isinstance(key, int):
                raise _FuncError(f"cannot index slice/array with type {_type_name(key)}")
            if not 0 <= key < len(item):
                raise _FuncError(f"index out of range: {key}")
            item = ord(item[key]) if isinstance(item, str) else item[key]
        elif item is NIL or item is None:
            raise _FuncError("index of untyped nil")
        else:
            raise _FuncError(f"can't index item of type {_type_name(item)}")
    return item


def _slice(item: Any, *bounds: Any) -> Any:
    if not isinstance(item, (str, list, tuple)):
        raise _FuncError(f"can't slice item of type {_type_name(item)}")
    if len(bounds) > 2:
        raise _FuncError("too many slice indexes")
    for b in bounds:
        if isinstance(b, bool) or not isinstance(b, int):
            raise _FuncError("cannot index slice/array with non-integer")
    low = bounds[0] if bounds else 0
    high = bounds[1] if len(bounds) > 1 else len(item)
    if not 0 <= low <= high <= len(item):
        raise _FuncError(f"index out of range: {low}:{high}")
    return item[low:high]


def _len(item: Any) -> int:
    if isinstance(item, (str, list, tuple, Mapping)):
        return len(item.encode() if isinstance(item, str) else item)
    raise _FuncError(f"len of type {_type_name(item)}")


def _sprint(*args: Any) -> str:
    """Go's Sprint: a space between operands when neither is a string."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if i > 0 and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(go_string(arg))
    return "".join(out)


_VERB_RE = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+))?([a-zA-Z%])")


_SHORT_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(text: str, backslashed: str, unicode: str, control: str) -> str:
    """Backslash ``backslashed`` characters, ``\\uXXXX`` the ``unicode`` ones, short
    escapes for newline/tab/CR and ``control`` % code for other control characters."""
    out: list[str] = []
    for ch in text:
        if ch in backslashed:
            out.append("\\" + ch)
        elif ch in unicode:
            out.append(f"\\u{ord(ch):04X}")
        elif ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(control % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


def _go_quote(text: str) -> str:
    return '"' + _escape(text, '"\\', "", "\\x%02x") + '"'


def _sprintf(fmt: Any, *args: Any) -> str:
    """Go's Sprintf for the verbs templates use: %s %v %d %q %t %x %X %f %g %e %%."""
    if not isinstance(fmt, str):
        raise _FuncError("printf: format is not a string")
    rest = list(args)
    out: list[str] = []
    pos = 0
    for m in _VERB_RE.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width, precision, verb = m.groups()
        if verb == "%":
            out.append("%")
            continue
        if not rest:
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = rest.pop(0)
        text = _format_verb(verb, arg, precision)
        if width and width != "*":
            pad = int(width) - len(text)
            if pad > 0:
                if "-" in flags:
                    text = text + " " * pad
                elif "0" in flags and verb in "dfxXeg":
                    text = (
                        ("-" + "0" * pad + text[1:]) if text.startswith("-") else "0" * pad + text
                    )
                else:
                    text = " " * pad + text
        out.append(text)
    out.append(fmt[pos:])
    if rest:
        out.append("%!(EXTRA " + ", ".join(f"{_type_name(a)}={go_string(a)}" for a in rest) + ")")
    return "".join(out)


def _format_verb(verb: str, arg: Any, precision: str | None) -> str:
    kind = _kind(arg)
    if verb in "sv":
        text = go_string(arg)
        if verb == "s" and precision is not None and kind == "string":
            text = text[: int(precision)]
        if verb == "s" and kind in ("int", "float", "bool"):
            return f"%!s({_type_name(arg)}={go_string(arg)})"
        return text
    if verb == "q" and kind == "string":
        return _go_quote(arg)
    if verb == "t" and kind == "bool":
        return go_string(arg)
    if verb == "d" and kind == "int":
        return str(arg)
    if verb in "xX" and kind in ("int", "string"):
        text = format(arg, "x") if kind == "int" else arg.encode().hex()
        return text.upper() if verb == "X" else text
    if verb in "feg" and kind == "float":
        digits = 6 if precision is None else int(precision)
        if verb == "g" and precision is None:
            return go_float(arg)
        text = format(arg, f".{digits}{verb}")
        return re.sub(r"e([+-])(\d)$", r"e\g<1>0\2", text)
    return f"%!{verb}({_type_name(arg)}={go_string(arg)})"


def _html(*args: Any) -> str:
    text = _sprint(*args)
    for a, b in (("&", "&amp;"), ("'", "&#39;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&#34;")):
        text = text.replace(a, b)
    return text.replace("\x00", "\ufffd")


def _js(*args: Any) -> str:
    return _escape(_sprint(*args), "\\'\"", "<>&=", "\\u%04X")


def _urlquery(*args: Any) -> str:
    return quote_plus(_sprint(*args), safe="-_.~")


FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "not": lambda a: not truth(a),
    "len": _len,
    "index": _index,
    "slice": _slice,
    "print": _sprint,
    "printf": _sprintf,
    "println": lambda *a: " ".join(go_string(x) for x in a) + "\n",
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": lambda a, b: (lambda x, y: x < y)(*_ordered(a, b)),
    "le": lambda a, b: (lambda x, y: x <= y)(*_ordered(a, b)),
    "gt": lambda a, b: (lambda x, y: x > y)(*_ordered(a, b)),
    "ge": lambda a, b: (lambda x, y: x >= y)(*_ordered(a, b)),
    "html": _html,
    "js": _js,
    "urlquery": _urlquery,
}
_SHORT_CIRCUIT = ("and", "or")
KNOWN_FUNCTIONS = frozenset([*FUNCTIONS, *_SHORT_CIRCUIT])
_REFUSED = ("define", "template", "block", "call")


# --- lexing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tok:
    kind: str  # field var ident string number bool nil pipe lparen rparen decl assign comma
    text: str
    value: Any = None


_ACTION_TOKENS = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
  | (?P<dot>\.)
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\\n]|\\.)+')
  | (?P<number>[+-]?(?:0[xX][0-9a-fA-F_]+|(?:\d[\d_]*)?\.?\d[\d_]*(?:[eE][+-]?\d+)?))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<decl>:=)
  | (?P<assign>=)
  | (?P<pipe>\|)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
    """,
    re.VERBOSE,
)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a",
            "b": "\b", "f": "\f", "v": "\v", "0": "\0"}  # fmt: skip


def _unquote(text: str) -> str:
    body = text[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt == "x":
            out.append(chr(int(body[i + 2 : i + 4], 16)))
            i += 4
        elif nxt == "u":
            out.append(chr(int(body[i + 2 : i + 6], 16)))
            i += 6
        elif nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            raise ValueError(f"unknown escape sequence \\{nxt}")
    return "".join(out)


def _tokens(action: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(action):
        m = _ACTION_TOKENS.match(action, pos)
        if m is None:
            raise ValueError(f"unexpected {action[pos]!r} in action")
        pos = m.end()
        kind = m.lastgroup or ""
        text = m.group()
        if kind == "space":
            continue
        if kind in ("string", "char"):
            value = _unquote(text)
            tokens.append(_Tok("string" if kind == "string" else "number", text,
                               value if kind == "string" else ord(value)))  # fmt: skip
        elif kind == "raw":
            tokens.append(_Tok("string", text, text[1:-1]))
        elif kind == "number":
            clean = text.replace("_", "")
            try:
                number: Any = int(clean, 0)
            except ValueError:
                number = float(clean)
            tokens.append(_Tok("number", text, number))
        elif kind == "ident" and text in ("true", "false"):
            tokens.append(_Tok("bool", text, text == "true"))
        elif kind == "ident" and text == "nil":
            tokens.append(_Tok("nil", text, NIL))
        else:
            tokens.append(_Tok(kind, text))
    return tokens


# --- parse tree -----------------------------------------------------------------------------


@dataclass
class _Operand:
    """One argument: a literal, ``.``, a field chain, a variable, a function or a (pipe)."""

    kind: str  # literal dot field var func pipe
    value: Any = None
    fields: tuple[str, ...] = ()


@dataclass
class _Pipeline:
    line: int
    decl: tuple[str, ...] = ()
    assign: bool = False  # "=" rather than ":="
    commands: list[list[_Operand]] = field(default_factory=list)


@dataclass
class _Node:
    kind: str  # text action if range with break continue
    line: int
    text: str = ""
    pipe: _Pipeline | None = None
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)


_ACTION_RE = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_COMMENT_RE = re.compile(r"^/\*.*\*/$", re.DOTALL)


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source

    def fail(self, line: int, message: str) -> GoTemplateError:
        return GoTemplateError(f"{self.source}:{line}: {message}")

    def items(self) -> Iterator[tuple[str, str, int]]:
        """(kind, text, line) for text pieces and actions, with trim markers applied."""
        pos = 0
        pending: list[tuple[str, str, int]] = []
        trim_next = False
        while True:
            start = self.text.find("{{", pos)
            chunk = self.text[pos:] if start < 0 else self.text[pos:start]
            if trim_next:
                chunk = chunk.lstrip(" \t\r\n")
            if start < 0:
                if chunk:
                    pending.append(("text", chunk, 0))
                break
            m = _ACTION_RE.match(self.text, start)
            line = self.text.count("\n", 0, start) + 1
            if m is None:
                raise self.fail(line, "unclosed action")
            left, body, right = m.group(1), m.group(2), m.group(3)
            if left:
                chunk = chunk.rstrip(" \t\r\n")
            if chunk:
                pending.append(("text", chunk, 0))
            trim_next = bool(right)
            stripped = body.strip()
            if not (stripped.startswith("/*") and _COMMENT_RE.match(stripped)):
                if stripped.startswith("/*"):
                    raise self.fail(line, "unclosed comment")
                pending.append(("action", body, line))
            pos = m.end()
        yield from pending

    def parse(self) -> list[_Node]:
        stream = list(self.items())
        nodes, end, _ = self._list(stream, 0, top=True)
        assert end == len(stream)
        return nodes

    def _list(
        self, stream: list[tuple[str, str, int]], i: int, *, top: bool = False, loop: bool = False
    ) -> tuple[list[_Node], int, tuple[str, str, int] | None]:
        """Nodes up to a matching ``else``/``end`` (returned as the terminator)."""
        nodes: list[_Node] = []
        while i < len(stream):
            kind, text, line = stream[i]
            if kind == "text":
                nodes.append(_Node("text", line, text=text))
                i += 1
                continue
            words = text.split(None, 1)
            head = words[0] if words else ""
            rest = words[1] if len(words) > 1 else ""
            if head in ("end", "else"):
                if top:
                    raise self.fail(line, f"unexpected {{{{{head}}}}}")
                return nodes, i + 1, stream[i]
            if head in ("if", "range", "with"):
                node, i = self._block(stream, i, head, rest, line, loop=loop)
                nodes.append(node)
                continue
            if head in ("break", "continue"):
                if not loop:
                    raise self.fail(line, f"{{{{{head}}}}} outside {{{{range}}}}")
                if rest.strip():
                    raise self.fail(line, f"unexpected {rest.strip()!r} in {head}")
                nodes.append(_Node(head, line))
                i += 1
                continue
            if head in _REFUSED:
                raise self.fail(
                    line, f"{{{{{head}}}}} is not supported by kpc's matchbox template renderer"
                )
            if not text.strip():
                raise self.fail(line, "missing value for command")
            nodes.append(_Node("action", line, pipe=self._pipeline(text, line, decl_ok=True)))
            i += 1
        return nodes, i, None

    def _block(
        self, stream: list[tuple[str, str, int]], i: int, head: str, rest: str, line: int,
        *, loop: bool,
    ) -> tuple[_Node, int]:  # fmt: skip
        if not rest.strip():
            raise self.fail(line, f"missing value for {head}")
        pipe = self._pipeline(rest, line, decl_ok=True, ranging=head == "range")
        body, i, term = self._list(stream, i + 1, loop=loop or head == "range")
        node = _Node(head, line, pipe=pipe, body=body)
        if term is None:
            raise self.fail(line, f"unexpected EOF: this {{{{{head}}}}} has no {{{{end}}}}")
        _, text, tline = term
        words = text.split(None, 1)
        if words and words[0] == "else":
            after = words[1] if len(words) > 1 else ""
            chained = after.split(None, 1)
            if chained and chained[0] in ("if", "with") and head in ("if", "with"):
                inner, i = self._block(
                    stream, i - 1, chained[0], chained[1] if len(chained) > 1 else "", tline,
                    loop=loop,
                )  # fmt: skip
                node.orelse = [inner]
                return node, i
            if after.strip():
                raise self.fail(tline, f"unexpected {after.strip()!r} after else")
            node.orelse, i, term = self._list(stream, i, loop=loop)
            if term is None:
                raise self.fail(tline, "unexpected EOF: this {{else}} has no {{end}}")
            _, text, tline = term
            if text.split()[:1] != ["end"]:
                raise self.fail(tline, "expected {{end}}")
        if text.split()[1:]:
            raise self.fail(tline, "unexpected text after end")
        return node, i

    def _pipeline(self, text: str, line: int, *, decl_ok: bool, ranging: bool = False) -> _Pipeline:
        try:
            tokens = _tokens(text)
        except ValueError as exc:
            raise self.fail(line, str(exc)) from None
        pipe = _Pipeline(line)
        # declarations: $x := / $x = / $i, $e :=
        j = 0
        names: list[str] = []
        while j < len(tokens) and tokens[j].kind == "var" and "." not in tokens[j].text:
            names.append(tokens[j].text)
            if j + 1 < len(tokens) and tokens[j + 1].kind == "comma" and ranging:
                j += 2
                continue
            break
        if names and len(tokens) > j + 1 and tokens[j + 1].kind in ("decl", "assign"):
            if not decl_ok:
                raise self.fail(line, "declaration not allowed here")
            pipe.decl = tuple(names)
            pipe.assign = tokens[j + 1].kind == "assign"
            tokens = tokens[j + 2 :]
        pipe.commands = self._commands(tokens, line)
        return pipe

    def _commands(self, tokens: list[_Tok], line: int) -> list[list[_Operand]]:
        commands: list[list[_Operand]] = []
        current: list[_Operand] = []
        j = 0
        while j < len(tokens):
            tok = tokens[j]
            if tok.kind == "pipe":
                if not current:
                    raise self.fail(line, "missing command before |")
                commands.append(current)
                current = []
                j += 1
                continue
            operand, j = self._operand(tokens, j, line)
            current.append(operand)
        if not current:
            raise self.fail(line, "missing value for command")
        commands.append(current)
        for k, command in enumerate(commands):
            if k > 0 and command[0].kind not in ("func", "field", "var", "dot"):
                raise self.fail(line, "non executable command in pipeline stage")
        return commands

    def _operand(self, tokens: list[_Tok], j: int, line: int) -> tuple[_Operand, int]:
        tok = tokens[j]
        if tok.kind == "lparen":
            depth, k = 1, j + 1
            while k < len(tokens) and depth:
                depth += {"lparen": 1, "rparen": -1}.get(tokens[k].kind, 0)
                k += 1
            if depth:
                raise self.fail(line, "unclosed left paren")
            inner = _Pipeline(line, commands=self._commands(tokens[j + 1 : k - 1], line))
            operand = _Operand("pipe", inner)
            j = k
        elif tok.kind == "rparen":
            raise self.fail(line, "unexpected right paren")
        elif tok.kind == "field":
            return _Operand("field", fields=tuple(tok.text[1:].split("."))), j + 1
        elif tok.kind == "dot":
            return _Operand("dot"), j + 1
        elif tok.kind == "var":
            name, *chain = tok.text.split(".")
            return _Operand("var", name, tuple(chain)), j + 1
        elif tok.kind in ("string", "number", "bool", "nil"):
            return _Operand("literal", tok.value), j + 1
        elif tok.kind == "ident":
            if tok.text in _REFUSED:
                raise self.fail(line, f"{tok.text!r} is not supported by kpc's renderer")
            if tok.text not in KNOWN_FUNCTIONS:
                raise self.fail(line, f'function "{tok.text}" not defined')
            return _Operand("func", tok.text), j + 1
        else:
            raise self.fail(line, f"unexpected {tok.text!r} in command")
        # (pipe).field.chain
        if j < len(tokens) and tokens[j].kind == "field":
            operand.fields = tuple(tokens[j].text[1:].split("."))
            j += 1
        return operand, j


# --- execution ------------------------------------------------------------------------------


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


_MAX_OUTPUT = 8 * 1024 * 1024
_MAX_RANGE_STEPS = 1_000_000


@dataclass
class _State:
    source: str
    out: list[str]
    size: int = 0
    steps: int = 0


class _Exec:
    def __init__(self, state: _State) -> None:
        self.state = state

    def fail(self, line: int, message: str) -> GoTemplateError:
        return GoTemplateError(f"{self.state.source}:{line}: {message}")

    def write(self, text: str, line: int) -> None:
        self.state.size += len(text)
        if self.state.size > _MAX_OUTPUT:
            raise self.fail(line, f"output larger than {_MAX_OUTPUT} characters")
        self.state.out.append(text)

    def run(self, nodes: Sequence[_Node], dot: Any, scope: list[dict[str, Any]]) -> None:
        frame: dict[str, Any] = {}
        scope = [*scope, frame]
        for node in nodes:
            if node.kind == "text":
                self.write(node.text, node.line)
            elif node.kind == "action":
                assert node.pipe is not None
                value = self.pipeline(node.pipe, dot, scope)
                if not node.pipe.decl:
                    self.write(_printed(value), node.line)
            elif node.kind in ("if", "with"):
                assert node.pipe is not None
                inner: dict[str, Any] = {}
                value = self.pipeline(node.pipe, dot, [*scope, inner])
                if truth(value):
                    self.run(node.body, value if node.kind == "with" else dot, [*scope, inner])
                else:
                    self.run(node.orelse, dot, [*scope, inner])
            elif node.kind == "range":
                self.range(node, dot, scope)
            elif node.kind == "break":
                raise _Break
            elif node.kind == "continue":
                raise _Continue

    def range(self, node: _Node, dot: Any, scope: list[dict[str, Any]]) -> None:
        assert node.pipe is not None
        pipe = node.pipe
        plain = _Pipeline(pipe.line, commands=pipe.commands)
        value = self.pipeline(plain, dot, scope)
        if isinstance(value, Mapping):
            pairs: list[tuple[Any, Any]] = [(k, value[k]) for k in sorted(value, key=str)]
        elif isinstance(value, (list, tuple)):
            pairs = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            pairs = [(i, i) for i in range(value)]
        elif value is NIL or value is None:
            pairs = []
        else:
            raise self.fail(pipe.line, f"range can't iterate over {go_string(value)}")
        if not pairs:
            self.run(node.orelse, dot, scope)
            return
        for key, element in pairs:
            self.state.steps += 1
            if self.state.steps > _MAX_RANGE_STEPS:
                raise self.fail(pipe.line, "too many range iterations")
            frame: dict[str, Any] = {}
            if len(pipe.decl) == 1:
                frame[pipe.decl[0]] = element
            elif len(pipe.decl) == 2:
                frame[pipe.decl[0]], frame[pipe.decl[1]] = key, element
            try:
                self.run(node.body, element, [*scope, frame])
            except _Break:
                break
            except _Continue:
                continue

    def lookup(self, name: str, scope: list[dict[str, Any]], line: int) -> Any:
        for frame in reversed(scope):
            if name in frame:
                return frame[name]
        raise self.fail(line, f"undefined variable: {name}")

    def pipeline(self, pipe: _Pipeline, dot: Any, scope: list[dict[str, Any]]) -> Any:
        value: Any = _UNSET
        for command in pipe.commands:
            value = self.command(command, dot, scope, value, pipe.line)
        if pipe.decl:
            if pipe.assign:
                for frame in reversed(scope):
                    if pipe.decl[0] in frame:
                        frame[pipe.decl[0]] = value
                        break
                else:
                    raise self.fail(pipe.line, f"undefined variable: {pipe.decl[0]}")
            else:
                scope[-1][pipe.decl[0]] = value
        return value

    def command(
        self, operands: list[_Operand], dot: Any, scope: list[dict[str, Any]], piped: Any,
        line: int,
    ) -> Any:  # fmt: skip
        first = operands[0]
        if first.kind == "func":
            name = str(first.value)
            if name in _SHORT_CIRCUIT:
                args = operands[1:]
                if not args and piped is _UNSET:
                    raise self.fail(line, f"wrong number of args for {name}: want at least 1")
                result: Any = None
                for arg in args:
                    result = self.operand(arg, dot, scope, line)
                    if truth(result) == (name == "or"):
                        return result
                if piped is not _UNSET:
                    result = piped
                return result
            values = [self.operand(arg, dot, scope, line) for arg in operands[1:]]
            if piped is not _UNSET:
                values.append(piped)
            try:
                return FUNCTIONS[name](*values)
            except _FuncError as exc:
                raise self.fail(line, f"error calling {name}: {exc}") from None
            except TypeError:
                raise self.fail(line, f"wrong number of args for {name}") from None
        if len(operands) > 1 or piped is not _UNSET:
            raise self.fail(line, f"can't give argument to non-function {self.describe(first)}")
        return self.operand(first, dot, scope, line)

    def describe(self, operand: _Operand) -> str:
        if operand.kind == "field":
            return "." + ".".join(operand.fields)
        if operand.kind == "var":
            return str(operand.value)
        return go_string(operand.value)

    def operand(self, operand: _Operand, dot: Any, scope: list[dict[str, Any]], line: int) -> Any:
        if operand.kind == "literal":
            return operand.value
        if operand.kind == "dot":
            return dot
        if operand.kind == "func":
            if operand.value in _SHORT_CIRCUIT:
                raise self.fail(line, f"wrong number of args for {operand.value}")
            try:
                return FUNCTIONS[str(operand.value)]()
            except (TypeError, _FuncError):
                raise self.fail(line, f"wrong number of args for {operand.value}") from None
        if operand.kind == "var":
            name = str(operand.value)
            base = scope[0]["$"] if name == "$" else self.lookup(name, scope, line)
            return self.fields(base, operand.fields, line, name)
        if operand.kind == "field":
            return self.fields(dot, operand.fields, line, "")
        if operand.kind == "pipe":
            value = self.pipeline(operand.value, dot, scope)
            return self.fields(value, operand.fields, line, "")
        raise self.fail(line, f"cannot evaluate {operand.kind}")

    def fields(self, value: Any, names: tuple[str, ...], line: int, base: str) -> Any:
        path = base
        for name in names:
            path += "." + name
            if isinstance(value, Mapping):
                if name not in value:
                    raise self.fail(line, f'executing: map has no entry for key "{name}" ({path})')
                value = value[name]
                if value is None:
                    value = NIL
            elif value is NIL or value is None:
                raise self.fail(line, f"nil pointer evaluating interface {{}}.{name} ({path})")
            else:
                raise self.fail(
                    line, f"can't evaluate field {name} in type {_type_name(value)} ({path})"
                )
        return value


class _Unset:
    pass


_UNSET = _Unset()


# --- public API -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GoTemplate:
    """A parsed template; ``render`` may be called any number of times."""

    source: str
    nodes: tuple[_Node, ...]

    def render(self, data: Mapping[str, Any]) -> str:
        state = _State(self.source, [])
        try:
            _Exec(state).run(self.nodes, data, [{"$": data}])
        except RecursionError:
            raise GoTemplateError(f"{self.source}: template nests too deeply") from None
        return "".join(state.out)


def parse(text: str, source: str) -> GoTemplate:
    """Parse ``text`` (named ``source`` in errors); GoTemplateError with file:line."""
    try:
        nodes = _Parser(text, source).parse()
    except RecursionError:
        raise GoTemplateError(f"{source}: template nests too deeply") from None
    return GoTemplate(source, tuple(nodes))


def has_actions(text: str) -> bool:
    """True when ``text`` contains a ``{{`` (Go's parser would treat it as an action)."""
    return "{{" in text
