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

:class:`Setting` (one key: its checks and its reference row) lives in
:mod:`fedmi.shared.config_setting` and is re-exported here; this module holds what works on
a whole configuration: validation, the did-you-mean messages and which settings a reference
table shows.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedmi.shared.config_setting import KINDS, InvalidValue, Setting, markdown_table

__all__ = ["KINDS", "ConfigError", "Schema", "Setting"]


class ConfigError(ValueError):
    """A configuration value, key or table is unusable; the message names the key and the fix."""


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
            except InvalidValue as exc:
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
            except InvalidValue as exc:
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
        return markdown_table(chosen)


def flower_pairs(text: str, option: str, error: type[ConfigError]) -> dict[str, object]:
    """Flower's ``key=value ...`` syntax (``--run-config``, ``--node-config``) as a mapping.

    Only the syntax is read here (with Flower's own parser); the keys are then validated by
    the caller's schema. An empty text gives ``{}``.

    Raises
    ------
    ConfigError
        Of class ``error``, naming ``option`` and the text, when it is not Flower's syntax.
    """
    if not text.strip():
        return {}
    from flwr.common.config import parse_config_args

    try:
        return dict(parse_config_args([text]))
    except Exception as exc:  # click.ClickException (syntax) or ValueError
        detail = getattr(exc, "message", None) or str(exc)
        raise error(f"{option} {text!r}: {detail}") from None


def _closest(word: str, candidates: Sequence[str]) -> str | None:
    lower = {c.lower(): c for c in candidates}
    if word.lower() in lower:
        return lower[word.lower()]
    near = difflib.get_close_matches(word.lower(), list(lower), n=1, cutoff=0.7)
    return lower[near[0]] if near else None
