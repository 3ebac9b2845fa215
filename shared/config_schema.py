"""Declared settings and strict validation, shared by every configuration door of fedmi.

A :class:`Setting` declares one key: its type, default, allowed values or range and a
one-line doc. A :class:`Schema` groups settings, either flat (node-config, run config) or
in TOML tables (site.toml), and validates a mapping into typed values. Every problem —
an unknown key or table, a key outside its table, a wrong type, a value out of range —
raises :class:`ConfigError` (a :class:`ValueError`) whose message names the source (a
file path, ``node-config``, ``run config``, ``--config``), the key and, where one is close,
the key that was probably meant::

    site.toml: `epsilom` is not a setting of [privacy]; did you mean `epsilon`?
    site.toml: `role` belongs in [site], not at the top level

Values are typed as TOML and Flower give them (``str``, ``int``, ``float``, ``bool``); a
command-line ``KEY=VALUE`` is read with the setting's own type
(:meth:`Schema.parse_pairs`). Nothing is converted on a guess: a string is never an int.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Python types a setting may hold (TOML's scalar types)
KINDS = (str, int, float, bool)


class ConfigError(ValueError):
    """A configuration value, key or table is unusable; the message names the key and the fix."""


class _Invalid(Exception):
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
        """``value`` as this setting's type, checked; raises ``_Invalid`` when it does not fit."""
        if self.kind is bool:
            if isinstance(value, str) and value.strip().lower() in ("on", "off"):
                value = value.strip().lower() == "on"
            if not isinstance(value, bool):
                raise _Invalid(f"must be {self.expected()}")
        elif self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise _Invalid(f"must be {self.expected()}")
        elif self.kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _Invalid(f"must be {self.expected()}")
            value = float(value)
            if not math.isfinite(value):
                raise _Invalid(f"must be {self.expected()}")
        elif not isinstance(value, str):
            raise _Invalid(f"must be {self.expected()} (in quotes)")
        choices = self.allowed()
        if choices and value not in choices:
            raise _Invalid(f"must be {self.expected()}")
        if not self._in_range(value):  # type: ignore[arg-type]
            raise _Invalid(f"must be {self.expected()}")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise _Invalid(problem)
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
                raise _Invalid(f"must be {self.expected()}") from None
        elif self.kind is float:
            try:
                value = float(raw)
            except ValueError:
                raise _Invalid(f"must be {self.expected()}") from None
        elif raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        return self.coerce(value)


@dataclass(frozen=True)
class Schema:
    """The settings of one configuration, flat or in TOML tables.

    Attributes
    ----------
    name
        The configuration's name in messages and in the reference (``run config``,
        ``node-config``, ``site.toml``).
    tables
        Table name → its settings. A flat configuration has the single table ``""`` (the
        top level); a TOML file names its tables (``{"site": ..., "privacy": ...}``).
    error
        The :class:`ConfigError` subclass raised (callers may pass another one).
    ignored_tables
        Tables accepted but never read (with their sub-tables), e.g. site.toml's ``truth``.
    """

    name: str
    tables: Mapping[str, tuple[Setting, ...]]
    error: type[ConfigError] = ConfigError
    ignored_tables: tuple[str, ...] = ()
    _index: dict[str, tuple[str, Setting]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for table, settings in self.tables.items():
            for s in settings:
                if s.key in self._index:
                    raise ValueError(f"{self.name}: {s.key} declared twice")
                self._index[s.key] = (table, s)

    @property
    def flat(self) -> bool:
        """Whether the configuration has no tables (keys at the top level only)."""
        return list(self.tables) == [""]

    @property
    def settings(self) -> tuple[Setting, ...]:
        """Every setting, table by table."""
        return tuple(s for settings in self.tables.values() for s in settings)

    def keys(self) -> tuple[str, ...]:
        """Every key, table by table."""
        return tuple(s.key for s in self.settings)

    def setting(self, key: str) -> Setting:
        """The declared setting ``key`` (``KeyError`` when there is none)."""
        return self._index[key][1]

    def defaults(self) -> dict[str, object]:
        """Key → default, every table's keys together."""
        return {s.key: s.default for s in self.settings}

    # -- validation --------------------------------------------------------------------

    def validate(
        self,
        values: Mapping[str, object],
        source: str,
        *,
        error: type[ConfigError] | None = None,
    ) -> dict[str, Any]:
        """Check ``values`` and return them typed.

        Parameters
        ----------
        values
            Flat configuration: key → value. Tabled configuration: the parsed TOML
            document (table → key → value).
        source
            Where the values come from, first in every message (a file path,
            ``"node-config"``, ``"--config"``).
        error
            The exception class to raise (default: the schema's).

        Returns
        -------
        dict
            Flat: key → typed value, for the keys given. Tabled: table → key → typed value
            (every declared table present, possibly empty).

        Raises
        ------
        ConfigError
            On the first unknown key or table, misplaced key, wrong type or bad value.
        """
        err = error or self.error
        if self.flat:
            return self._validate_table("", values, source, err)
        out: dict[str, Any] = {table: {} for table in self.tables}
        for key, value in values.items():
            if isinstance(value, Mapping):
                if key in self.tables:
                    out[key] = self._validate_table(key, value, source, err)
                elif key not in self.ignored_tables:
                    raise err(f"{source}: {self._unknown_table(key)}")
            elif key in self._index:
                owner = self._index[key][0]
                raise err(f"{source}: `{key}` belongs in [{owner}], not at the top level")
            else:
                raise err(f"{source}: {self._unknown_key(key, None)}")
        return out

    def _validate_table(
        self, table: str, values: Mapping[str, object], source: str, err: type[ConfigError]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        where = f"[{table}] " if table else ""
        for key, value in values.items():
            found = self._index.get(key)
            if found is None:
                if isinstance(value, Mapping) and table:
                    raise err(f"{source}: [{table}.{key}] is not a table of {self.name}")
                raise err(f"{source}: {self._unknown_key(key, table)}")
            owner, setting = found
            if owner != table:
                raise err(f"{source}: `{key}` belongs in [{owner}], not in [{table}]")
            try:
                out[key] = setting.coerce(value)
            except _Invalid as exc:
                raise err(f"{source}: {where}`{key}` {exc.problem}, not {value!r}") from None
        return out

    def parse_pairs(
        self, items: Iterable[str], source: str, *, error: type[ConfigError] | None = None
    ) -> dict[str, Any]:
        """``KEY=VALUE`` strings (a flat schema's command line) as typed, checked values."""
        err = error or self.error
        out: dict[str, Any] = {}
        for item in items:
            key, sep, text = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise err(f"{source} {item!r}: write KEY=VALUE")
            if key not in self._index:
                raise err(f"{source}: {self._unknown_key(key, '')}")
            try:
                out[key] = self.setting(key).from_text(text)
            except _Invalid as exc:
                raise err(f"{source}: `{key}` {exc.problem}, not {text!r}") from None
        return out

    # -- messages ----------------------------------------------------------------------

    def _unknown_key(self, key: str, table: str | None) -> str:
        """``table`` None: a top-level key of a tabled schema."""
        if self.flat:
            text = f"`{key}` is not a {self.name} setting"
        elif table is None:
            text = f"`{key}` is not a setting of {self.name}"
        else:
            text = f"`{key}` is not a setting of [{table}]"
        near = self.suggest(key, table)
        if near is None:
            if table is None and not self.flat:
                tables = " or ".join(f"[{t}]" for t in self.tables)
                return f"{text} (its settings go in {tables})"
            return text
        near_table = self._index[near][0]
        if self.flat or near_table == table:
            return f"{text}; did you mean `{near}`?"
        return f"{text}; did you mean `{near}` in [{near_table}]?"

    def _unknown_table(self, name: str) -> str:
        known = ", ".join(f"[{t}]" for t in self.tables)
        text = f"[{name}] is not a table of {self.name} (its tables: {known})"
        near = _closest(name, list(self.tables))
        return f"{text}; did you mean [{near}]?" if near else text

    def suggest(self, key: str, table: str | None = None) -> str | None:
        """The declared key closest to ``key`` (its own table's keys first), or ``None``."""
        normal = key.strip().lower().replace("_", "-").replace(" ", "-")
        if normal in self._index:
            return normal
        for s in self.settings:
            if normal in s.formerly:
                return s.key
        if table is not None and table in self.tables:
            own = [s.key for s in self.tables[table]]
            near = _closest(normal, own)
            if near:
                return near
        return _closest(normal, list(self._index))

    # -- reference ---------------------------------------------------------------------

    def markdown(self, table: str | None = None, keys: Iterable[str] | None = None) -> str:
        """A Markdown table of the settings (one table's, or the ``keys`` given), by group."""
        if keys is not None:
            chosen = [self.setting(k) for k in keys]
        elif table is not None:
            chosen = list(self.tables[table])
        else:
            chosen = list(self.settings)
        lines: list[str] = []
        groups: dict[str, list[Setting]] = {}
        for s in chosen:
            groups.setdefault(s.group, []).append(s)
        for group, settings in groups.items():
            if group:
                lines += ["", f"*{group}*", ""]
            lines += [
                "| key | type | default | allowed | meaning |",
                "|---|---|---|---|---|",
            ]
            for s in settings:
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


def _closest(word: str, candidates: Sequence[str]) -> str | None:
    lower = {c.lower(): c for c in candidates}
    if word.lower() in lower:
        return lower[word.lower()]
    near = difflib.get_close_matches(word.lower(), list(lower), n=1, cutoff=0.7)
    return lower[near[0]] if near else None
