"""The site's own settings: the ``[site]`` table of ``<site>/site.toml``.

Only the ``[site]`` table is parsed. Other tables (``[privacy]`` is read elsewhere; ``[truth]``,
written by the synthetic generator, must never be seen by the pipeline) are cut away as
text before parsing, so their values never enter this process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from fedmi.shared.contract import DEFAULT_MIN_CELL_COUNT

SITE_FILE = "site.toml"
ROLES = ("train", "holdout")

_TABLE_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


class SiteConfigError(ValueError):
    """site.toml is unreadable or contradicts the command line."""


@dataclass(frozen=True)
class SiteConfig:
    """``[site]`` of site.toml.

    Attributes
    ----------
    site_id
        ``site-id`` (default: the site folder's name).
    role
        ``train`` or ``holdout`` (default ``train``).
    task
        ``task`` the site's data is for, or ``None`` when not given.
    min_cell_count
        ``min-cell-count``: the small-cell rule's ``k`` (statistics from fewer cases are
        suppressed before they leave; default :data:`fedmi.shared.contract.DEFAULT_MIN_CELL_COUNT`).
    """

    site_id: str
    role: str = "train"
    task: str | None = None
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT


def site_table_text(text: str, table: str = "site") -> str:
    """The lines of one top-level TOML table (header excluded), other tables dropped."""
    keep: list[str] = []
    inside = False
    for line in text.splitlines():
        m = _TABLE_HEADER.match(line)
        if m:
            inside = m.group(1).strip().strip('"') == table
            continue
        if inside:
            keep.append(line)
    return "\n".join(keep)


def load_site_config(site_dir: Path) -> SiteConfig:
    """Read ``[site]`` from ``site_dir/site.toml`` (defaults when the file is absent).

    Raises
    ------
    SiteConfigError
        When the file exists but its ``[site]`` table cannot be parsed or has a bad role.
    """
    site_dir = Path(site_dir)
    path = site_dir / SITE_FILE
    if not path.is_file():
        return SiteConfig(site_id=site_dir.resolve().name)
    try:
        table = tomllib.loads(site_table_text(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SiteConfigError(f"{SITE_FILE}: the [site] table cannot be read ({exc})") from None
    site_id = str(table.get("site-id", table.get("site_id", "")) or site_dir.resolve().name)
    role = str(table.get("role", "train"))
    if role not in ROLES:
        raise SiteConfigError(f"{SITE_FILE}: [site] role must be one of {ROLES}, not {role!r}")
    task = table.get("task")
    k = parse_min_cell_count(table.get("min-cell-count", DEFAULT_MIN_CELL_COUNT), SITE_FILE)
    return SiteConfig(
        site_id=site_id, role=role, task=str(task) if task else None, min_cell_count=k
    )


def parse_min_cell_count(value: object, where: str) -> int:
    """``min-cell-count`` as a positive integer, or :class:`SiteConfigError` naming ``where``."""
    try:
        k = int(str(value))
    except ValueError:
        k = 0
    if k < 1:
        raise SiteConfigError(
            f"{where}: min-cell-count must be a whole number of at least 1, not {value!r}"
        )
    return k
