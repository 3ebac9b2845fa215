"""One declared configuration key: :class:`Setting`, its checks and how the reference shows it.

A setting reads and checks one value (:meth:`Setting.coerce` for a TOML or Flower value,
:meth:`Setting.from_text` for a command line's ``KEY=VALUE``) and raises
:class:`InvalidValue` saying what the value must be; :class:`fedmi.shared.config_schema.Schema`
groups settings and turns that into a :class:`~fedmi.shared.config_schema.ConfigError`
naming the source and the key. :func:`markdown_table` renders settings for
docs/configuration.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

#: Python types a setting may hold (TOML's scalar types)
KINDS = (str, int, float, bool)


class InvalidValue(Exception):
    """A value does not fit its setting (internal: the schema adds source and key)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def _quote(value: object) -> str:
    """A value as TOML writes it (``"text"``, ``true``, ``0.01``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


@dataclass(frozen=True)
class Setting:
    """One declared configuration key.

    Attributes
    ----------
    key
        The kebab-case key, as written in the file or on the command line.
    kind
        ``str``, ``int``, ``float`` (an ``int`` is accepted) or ``bool`` (``true`` /
        ``false``, or the words ``"on"`` / ``"off"``).
    default
        The value when the key is not given; ``None``: no fixed default (``default_doc``
        says what happens instead).
    doc
        One line: what the setting does.
    choices
        Allowed values (a tuple, or a function returning them, read at validation time so
        that registries such as :data:`fedmi.shared.methods.METHODS` can grow).
    minimum, maximum
        Inclusive bounds of a number, unless ``exclusive_minimum`` / ``exclusive_maximum``.
    check
        Further rule: returns what the value must be (e.g. ``"must list numbers between 0
        and 1"``) when it breaks the rule, else ``None``.
    check_doc
        The rule of ``check`` in a few words, for the reference's "allowed" column.
    default_doc
        How the reference shows a default that is not a fixed value.
    group
        A heading for the reference (e.g. ``"simulation only"``).
    formerly
        Old names of this key, so that the error for one points at the new name.
    """

    key: str
    kind: type
    default: object
    doc: str
    choices: tuple[object, ...] | Callable[[], Sequence[object]] = ()
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    check: Callable[[Any], str | None] | None = None
    check_doc: str = ""
    default_doc: str = ""
    group: str = ""
    formerly: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TypeError(f"setting {self.key}: kind must be one of {KINDS}")

    @property
    def field(self) -> str:
        """The key as a Python name (``num-server-rounds`` → ``num_server_rounds``)."""
        return self.key.replace("-", "_")

    def allowed(self) -> tuple[object, ...]:
        """The allowed values (empty: any value of the type within the range)."""
        return tuple(self.choices() if callable(self.choices) else self.choices)

    def type_text(self) -> str:
        """The type in words: ``text``, ``whole number``, ``number`` or ``switch``."""
        return {str: "text", int: "whole number", float: "number", bool: "switch"}[self.kind]

    def range_text(self) -> str:
        """The allowed range in words (``greater than 0 and less than 1``), or ``""``."""
        parts = []
        if self.minimum is not None:
            word = "greater than" if self.exclusive_minimum else "at least"
            parts.append(f"{word} {_number(self.minimum)}")
        if self.maximum is not None:
            word = "less than" if self.exclusive_maximum else "at most"
            parts.append(f"{word} {_number(self.maximum)}")
        return " and ".join(parts)

    def expected(self) -> str:
        """What a value must be, as the end of "must be ...": used in every error message."""
        if self.kind is bool:
            return '"on" or "off" (or true / false)'
        choices = self.allowed()
        if choices:
            return "one of " + ", ".join(_quote(c) for c in choices)
        what = {str: "text", int: "a whole number", float: "a number"}[self.kind]
        bounds = self.range_text()
        return f"{what} ({bounds})" if bounds else what

    def default_text(self) -> str:
        """The default as the reference shows it."""
        if self.default_doc:
            return self.default_doc
        if self.kind is bool and isinstance(self.default, bool):
            return '"on"' if self.default else '"off"'
        return _quote(self.default) if self.default is not None else "—"

    def coerce(self, value: object) -> object:
        """``value`` as this setting's type, checked; raises ``InvalidValue`` when it does not fit."""
        if self.kind is bool:
            if isinstance(value, str) and value.strip().lower() in ("on", "off"):
                value = value.strip().lower() == "on"
            if not isinstance(value, bool):
                raise InvalidValue(f"must be {self.expected()}")
        elif self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidValue(f"must be {self.expected()}")
        elif self.kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidValue(f"must be {self.expected()}")
            value = float(value)
            if not math.isfinite(value):
                raise InvalidValue(f"must be {self.expected()}")
        elif not isinstance(value, str):
            raise InvalidValue(f"must be {self.expected()} (in quotes)")
        choices = self.allowed()
        if choices and value not in choices:
            raise InvalidValue(f"must be {self.expected()}")
        if not self._in_range(value):  # type: ignore[arg-type]
            raise InvalidValue(f"must be {self.expected()}")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise InvalidValue(problem)
        return value

    def _in_range(self, value: float | str | bool) -> bool:
        if self.kind not in (int, float):
            return True
        v = float(value)
        if self.minimum is not None:
            if v < self.minimum or (self.exclusive_minimum and v == self.minimum):
                return False
        if self.maximum is not None:
            if v > self.maximum or (self.exclusive_maximum and v == self.maximum):
                return False
        return True

    def from_text(self, text: str) -> object:
        """A command-line value (``KEY=VALUE``'s VALUE) read with this setting's type, checked."""
        raw = text.strip()
        value: object = raw
        if self.kind is str:
            if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
                value = raw[1:-1]
        elif self.kind is int:
            try:
                value = int(raw)
            except ValueError:
                raise InvalidValue(f"must be {self.expected()}") from None
        elif self.kind is float:
            try:
                value = float(raw)
            except ValueError:
                raise InvalidValue(f"must be {self.expected()}") from None
        elif raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        return self.coerce(value)


def markdown_table(settings: Iterable[Setting]) -> str:
    """A Markdown table of ``settings``, one table per group (in the order groups appear)."""
    lines: list[str] = []
    groups: dict[str, list[Setting]] = {}
    for s in settings:
        groups.setdefault(s.group, []).append(s)
    for group, members in groups.items():
        if group:
            lines += ["", f"*{group}*", ""]
        lines += [
            "| key | type | default | allowed | meaning |",
            "|---|---|---|---|---|",
        ]
        for s in members:
            allowed = ", ".join(f"`{_quote(c)}`" for c in s.allowed())
            allowed = allowed or s.range_text() or s.check_doc
            if s.kind is bool:
                allowed = '`"on"`, `"off"` (or `true`, `false`)'
            if s.default_doc or s.default is None:
                default = s.default_text()
            else:
                default = f"`{s.default_text()}`"
            cells = [
                f"`{s.key}`",
                s.type_text(),
                default,
                allowed or "any",
                s.doc.replace("|", "\\|"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines).strip("\n")
