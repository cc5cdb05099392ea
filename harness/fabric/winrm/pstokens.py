"""PowerShell building blocks: statement/pipeline splitting, the tokenizer, the parameter binder, error records
(CLIXML) and the object type cmdlets return."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape


class PsError(Exception):
    def __init__(
        self, message: str, category: str, exception: str, fqid: str, command: str = "", target: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.category = category
        self.exception = exception
        self.fqid = fqid
        self.command = command
        self.target = target


class PsExit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def fq(cmdlet: str) -> str:
    return f"Microsoft.PowerShell.Commands.{cmdlet.replace('-', '')}Command"


def clixml_text(text: str) -> str:
    return escape(text.replace("_x", "_x005F_x")).replace("\r\n", "_x000D__x000A_").replace("\n", "_x000A_")


PROGRESS = (
    '<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T>'
    '<T>System.Object</T></TN><MS><I64 N="SourceId">1</I64><PR N="Record"><AV>Preparing modules for first '
    "use.</AV><AI>0</AI><Nil /><PI>-1</PI><PC>-1</PC><T>Completed</T><SR>-1</SR><SD> </SD></PR></MS></Obj>"
)


def ps_split(script: str, seps: str) -> list[str]:
    """Splits on any char in ``seps`` outside quotes and parentheses; ``#`` comments are dropped when splitting
    statements."""
    out: list[str] = []
    cur: list[str] = []
    quote = ""
    depth = 0
    i = 0
    while i < len(script):
        ch = script[i]
        if quote:
            cur.append(ch)
            if ch == "`" and quote == '"' and i + 1 < len(script):
                cur.append(script[i + 1])
                i += 1
            elif ch == quote:
                if i + 1 < len(script) and script[i + 1] == quote:
                    cur.append(script[i + 1])
                    i += 1
                else:
                    quote = ""
        elif ch in "'\"":
            quote = ch
            cur.append(ch)
        elif ch == "#" and "\n" in seps:
            while i < len(script) and script[i] != "\n":
                i += 1
            continue
        elif ch in seps and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            depth += 1 if ch == "(" else -1 if ch == ")" and depth > 0 else 0
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return [s.strip() for s in out if s.strip()]


_BACKTICK = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "`": "`", '"': '"', "$": "$", "'": "'"}


@dataclass
class Tok:
    text: str
    quoted: bool


def ps_tokens(stmt: str, env: Callable[[str], str]) -> list[Tok]:
    toks: list[Tok] = []
    i, n = 0, len(stmt)
    while i < n:
        ch = stmt[i]
        if ch.isspace():
            i += 1
            continue
        if ch == "'":
            j, buf = i + 1, []
            while j < n:
                if stmt[j] == "'":
                    if j + 1 < n and stmt[j + 1] == "'":
                        buf.append("'")
                        j += 2
                        continue
                    break
                buf.append(stmt[j])
                j += 1
            toks.append(Tok("".join(buf), True))
            i = j + 1
        elif ch == '"':
            j, buf = i + 1, []
            while j < n and stmt[j] != '"':
                if stmt[j] == "`" and j + 1 < n:
                    buf.append(_BACKTICK.get(stmt[j + 1], stmt[j + 1]))
                    j += 2
                    continue
                m = re.match(r"\$env:(\w+)", stmt[j:], re.IGNORECASE)
                if m:
                    buf.append(env(m.group(1)))
                    j += m.end()
                    continue
                buf.append(stmt[j])
                j += 1
            toks.append(Tok("".join(buf), True))
            i = j + 1
        else:
            j = i
            while j < n and not stmt[j].isspace():
                j += 1
            toks.append(Tok(stmt[i:j], False))
            i = j
    return toks


@dataclass
class Spec:
    name: str
    params: tuple[str, ...] = ()
    switches: tuple[str, ...] = ()
    positional: tuple[str, ...] = ()


def bind(spec: Spec, toks: list[Tok]) -> dict[str, Any]:
    bound: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    names = spec.params + spec.switches
    while i < len(toks):
        tok = toks[i]
        if not tok.quoted and tok.text == "--":  # end of parameters
            positional += [t.text for t in toks[i + 1 :]]
            break
        if not tok.quoted and tok.text.startswith("-") and len(tok.text) > 1 and not tok.text[1].isdigit():
            raw, _, inline = tok.text[1:].partition(":")
            key = raw.lower()
            matches = [p for p in names if p.lower() == key] or [p for p in names if p.lower().startswith(key)]
            if len(matches) != 1:
                raise PsError(
                    f"A parameter cannot be found that matches parameter name '{raw}'.",
                    f"InvalidArgument: (:) [{spec.name}], ParameterBindingException",
                    "ParameterBindingException",
                    f"NamedParameterNotFound,{spec.name}",
                    spec.name,
                )
            name = matches[0]
            if name in spec.switches:
                bound[name] = inline.lower() not in ("$false", "false", "0") if inline else True
            elif inline:
                bound[name] = inline
            else:
                if i + 1 >= len(toks):
                    raise PsError(
                        f"Missing an argument for parameter '{name}'. Specify a parameter of type 'System.String' "
                        "and try again.",
                        f"InvalidArgument: (:) [{spec.name}], ParameterBindingException",
                        "ParameterBindingException",
                        f"MissingArgument,{spec.name}",
                        spec.name,
                    )
                bound[name] = toks[i + 1].text
                i += 1
        else:
            positional.append(tok.text)
        i += 1
    free = [p for p in spec.positional if p not in bound]
    for value in positional:
        if not free:
            raise PsError(
                f"A positional parameter cannot be found that accepts argument '{value}'.",
                f"InvalidArgument: (:) [{spec.name}], ParameterBindingException",
                "ParameterBindingException",
                f"PositionalParameterNotFound,{spec.name}",
                spec.name,
            )
        bound[free.pop(0)] = value
    return bound


@dataclass
class Item:
    """A PowerShell object: ``kind`` selects the table it is formatted with; ``props`` its properties; ``types``
    the .NET types it is (``-is``), most derived first."""

    kind: str
    props: dict[str, Any]
    types: tuple[str, ...] = ()
