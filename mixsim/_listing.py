"""What ``mixsim list`` shows: the named parts a scenario chooses from (protocols,
problems, datasets, optimizers, compressors, memory schemes), one line each, and the
parameters, defaults, choices and theory of one of them.

Summaries come from the docstrings and protocol files, as plain text: the first paragraph
whole (never cut mid-sentence), reStructuredText markup removed.
"""

from __future__ import annotations

import difflib
import inspect
import re
import textwrap

from mixsim.errors import ConfigError

__all__ = ["plain", "summary", "sections", "describe"]

#: ``:func:`~mixsim.optim.adam_family``` -> ``adam_family``; ``:math:`x^2``` -> ``x^2``.
_ROLE = re.compile(r":[a-z]+:`~?([^`]*)`")
_LITERAL = re.compile(r"``([^`]*)``")
_INTERPRETED = re.compile(r"`([^`]*)`")
_HEADER = re.compile(r"^\s*-{3,}\s*$")


def plain(text: str) -> str:
    """``text`` without reStructuredText markup (roles, literals, backquotes)."""

    def role(match: re.Match) -> str:
        target = match.group(1)
        # A cross-reference names its target by its last part, as Sphinx shows it with ~.
        return target.rsplit(".", 1)[-1] if " " not in target else target

    text = _ROLE.sub(role, text)
    text = _LITERAL.sub(r"\1", text)
    return _INTERPRETED.sub(r"\1", text)


def summary(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line, as plain text."""
    paragraph = []
    for line in inspect.cleandoc(doc or "").splitlines():
        if not line.strip():
            break
        paragraph.append(line.strip())
    return plain(" ".join(paragraph))


def _section(doc: str | None, title: str) -> str:
    """A numpydoc section's body (``Parameters``, ``Notes``, ...), as plain text."""
    lines = inspect.cleandoc(doc or "").splitlines()
    for i in range(len(lines) - 1):
        if lines[i].strip() == title and _HEADER.match(lines[i + 1]):
            body = []
            for j in range(i + 2, len(lines)):
                if j + 1 < len(lines) and lines[j].strip() and _HEADER.match(lines[j + 1]):
                    break
                body.append(lines[j])
            return plain("\n".join(body).strip("\n"))
    return ""


def _registries() -> dict[str, dict]:
    from mixsim.optim import compressors, memory, registry

    return {"optimizers": registry._OPTIMIZERS, "compressors": compressors._COMPRESSORS,
            "memory schemes": memory._MEMORIES}


def sections() -> list[tuple[str, list[tuple[str, str]]]]:
    """``[(title, [(name, summary), ...]), ...]``: everything ``mixsim list`` shows."""
    from mixsim import data, problems
    from mixsim.protocol import list_protocols

    registries = _registries()
    rows = {title: [(name, summary(factory.__doc__)) for name, factory in table.items()]
            for title, table in registries.items()}
    return [
        ("protocols", list_protocols()),
        ("problems", problems.list_problems()),
        ("datasets", data.list_datasets()),
        ("optimizers", rows["optimizers"]),
        ("compressors", rows["compressors"]),
        ("memory schemes", [("none", "naive: send the compressed vector, remember nothing")]
         + rows["memory schemes"]),
    ]


def _indent(text: str) -> str:
    return textwrap.indent(text, "  ")


def _range(spec) -> str:
    if spec.min is None and spec.max is None:
        return ""
    low = "-inf" if spec.min is None else f"{spec.min:g}"
    high = "inf" if spec.max is None else f"{spec.max:g}"
    opening = "(" if spec.exclusive_min or spec.min is None else "["
    return f", in {opening}{low}, {high}{')' if spec.max is None else ']'}"


def _describe_protocol(name: str) -> str:
    from mixsim.protocol import catalog, load_protocol

    protocol = load_protocol(name)
    spec = protocol.wrapper or protocol.spec
    # A protocol that extends another is built on the base's file; name its own.
    lines = [f"protocol {protocol.name}: {protocol.summary}", f"  file: {catalog()[name]}"]
    if spec.description:
        lines += ["", _indent(plain(spec.description).strip())]
    params = protocol.describe_params()
    lines += ["", "parameters:" if params else "parameters: none"]
    for key, param in params.items():
        choices = f", one of {', '.join(map(str, param.choices))}" if param.choices else ""
        lines.append(f"  {key} ({param.type}, default {param.default!r}{choices}"
                     f"{_range(param)})" + (f": {plain(param.doc)}" if param.doc else ""))
    theory = protocol.theory
    if theory.t_mix is None:
        lines += ["", "theory: no closed form for t_mix" + (f" ({theory.note})"
                                                            if theory.note else "")]
    else:
        lines += ["", f"theory: t_mix = {str(theory.t_mix).lstrip('=')} ({theory.kind})"
                  + (f"; {theory.note}" if theory.note else "")]
    return "\n".join(lines)


def _signature(factory) -> str:
    """``top_k(k=None, *, density=None, offsets=None)``: names and defaults, no types."""
    parts, starred = [], False
    for param in inspect.signature(factory).parameters.values():
        if param.kind is param.KEYWORD_ONLY and not starred:
            parts.append("*")
            starred = True
        if param.kind is param.VAR_POSITIONAL:
            parts.append(f"*{param.name}")
            starred = True
        elif param.kind is param.VAR_KEYWORD:
            parts.append(f"**{param.name}")
        else:
            default = "" if param.default is param.empty else f"={param.default!r}"
            parts.append(f"{param.name}{default}")
    return f"{factory.__name__}({', '.join(parts)})"


def _describe_factory(kind: str, name: str, factory) -> str:
    lines = [f"{kind} {name}: {summary(factory.__doc__)}", f"  {_signature(factory)}"]
    params = _section(factory.__doc__, "Parameters")
    if params:
        lines += ["", "parameters:", _indent(params)]
    return "\n".join(lines)


def _describe_problem(name: str) -> str:
    from mixsim import problems

    cls, text = problems._PROBLEMS[name]
    lines = [f"problem {name}: {text}"]
    params = _section(cls.__doc__, "Parameters")
    if params:
        lines += ["", "parameters (data_dim and n_classes come from the data):",
                  _indent(params)]
    return "\n".join(lines)


def _describe_dataset(name: str) -> str:
    from mixsim import data

    _, keys, _, text = data._DATASETS[name]
    lines = [f"dataset {name}: {text}"]
    lines.append(f"  its keys: {', '.join(keys)}" if keys else "  its keys: none")
    lines.append("  every dataset: test_fraction, standardize, dtype, partition, batch "
                 "(docs/problems-and-data.md)")
    return "\n".join(lines)


def describe(name: str) -> str:
    """The details of every listed part called ``name`` (a protocol and a memory scheme
    may share one).

    Raises
    ------
    ConfigError
        ``name`` is none of them (the message gives the closest names).
    """
    from mixsim import data, problems
    from mixsim.protocol import catalog

    found = []
    if name in catalog():
        found.append(_describe_protocol(name))
    if name in problems._PROBLEMS:
        found.append(_describe_problem(name))
    elif name in problems._OTHER_PROBLEMS:
        found.append(f"problem {name}: {problems._OTHER_PROBLEMS[name]}\n  its parameters: "
                     "docs/torch.md")
    if name in data._DATASETS:
        found.append(_describe_dataset(name))
    kinds = {"optimizers": "optimizer", "compressors": "compressor",
             "memory schemes": "memory scheme"}
    for title, table in _registries().items():
        if name in table:
            found.append(_describe_factory(kinds[title], name, table[name]))
    if name == "none":
        found.append("memory scheme none: naive: send the compressed vector, remember nothing")
    if found:
        return "\n\n".join(found)
    names = [row[0] for _, rows in sections() for row in rows]
    close = difflib.get_close_matches(name, names, n=3)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise ConfigError(f"{name!r} is not a protocol, problem, dataset, optimizer, compressor "
                      f"or memory scheme{hint}; `mixsim list` shows them all", key="list")
