"""The site's own settings: ``<site>/site.toml``, its tables ``[site]`` and ``[privacy]``.

:data:`SITE_TOML` declares every key once (type, default, allowed values, doc); reading the
file validates the whole of it, so a typo anywhere (``epsilom``, a ``[Site]`` table, a
top-level ``role``) stops the command with the file, the key and the close match instead
of being dropped. The ``[truth]`` and ``[truth.*]`` tables the synthetic generator writes
are accepted but cut away as text before parsing, so their values never enter this process.
The SuperNode's ``--node-config`` uses the same key names
(:data:`fedmi.client.site.settings.NODE_CONFIG`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from fedmi.shared.config_schema import ConfigError, Schema, Setting
from fedmi.shared.contract import DEFAULT_MIN_CELL_COUNT
from fedmi.shared.tasks import TASKS

SITE_FILE = "site.toml"
ROLES = ("train", "holdout")
#: tables of site.toml that fedmi never reads (generator truth): cut before parsing
IGNORED_TABLES = ("truth",)

#: the lifetime budget of a site's data: about 8 for DP-SGD training and a fifth of it
#: (``release-share``) for the statistics each run releases (docs/privacy.md)
DEFAULT_EPSILON = 10.0
DEFAULT_DELTA = 1e-5
DEFAULT_MAX_GRAD_NORM = 1.0
DEFAULT_RELEASE_SHARE = 0.2
#: share of ε a site's ledger may reach through self-supervised pretraining (issue 22)
DEFAULT_PRETRAIN_SHARE = 0.3
ACCOUNTANTS = ("rdp", "prv")

_TABLE_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


class SiteConfigError(ConfigError):
    """site.toml, node-config or the site folder is unusable; the message names the fix."""


#: ``[site]``: who the site is (node-config uses the same keys, except ``task``)
SITE_SETTINGS = (
    Setting(
        "site-id",
        str,
        None,
        "the site's pseudonym in every reply and report (never a sensitive name)",
        default_doc="the site folder's name",
        formerly=("site_id",),
    ),
    Setting(
        "role",
        str,
        "train",
        "train: trains and evaluates; holdout: only evaluates the final model",
        choices=ROLES,
    ),
    Setting(
        "task",
        str,
        None,
        "the clinical task the site's data is for (checked against the run's task)",
        choices=lambda: tuple(TASKS),
        default_doc="not checked",
    ),
    Setting(
        "min-cell-count",
        int,
        DEFAULT_MIN_CELL_COUNT,
        "small-cell rule: statistics from fewer cases are pooled or withheld",
        minimum=1,
    ),
)

#: ``[privacy]``: the site's own DP-SGD budget (docs/privacy.md)
PRIVACY_SETTINGS = (
    Setting("dp", bool, True, "sample-level DP-SGD for training (the site's choice)"),
    Setting(
        "epsilon",
        float,
        DEFAULT_EPSILON,
        "ε budget over the lifetime of the site's data",
        minimum=0,
        exclusive_minimum=True,
        formerly=("epsilon-budget",),
    ),
    Setting(
        "delta",
        float,
        DEFAULT_DELTA,
        "δ of the (ε, δ) guarantee",
        minimum=0,
        maximum=1,
        exclusive_minimum=True,
        exclusive_maximum=True,
    ),
    Setting(
        "max-grad-norm",
        float,
        DEFAULT_MAX_GRAD_NORM,
        "per-sample gradient clipping norm C",
        minimum=0,
        exclusive_minimum=True,
    ),
    Setting(
        "accountant",
        str,
        "rdp",
        "privacy accountant (Opacus)",
        choices=ACCOUNTANTS,
        formerly=("dp-accountant",),
    ),
    Setting(
        "release-share",
        float,
        DEFAULT_RELEASE_SHARE,
        "share of ε a training site keeps for statistic releases in a run (the rest "
        "trains); a holdout site may release with its whole budget",
        minimum=0,
        maximum=1,
        exclusive_minimum=True,
        exclusive_maximum=True,
    ),
    Setting(
        "pretrain-share",
        float,
        DEFAULT_PRETRAIN_SHARE,
        "share of ε the ledger may reach through self-supervised pretraining (train.pretrain);"
        " the rest stays for fine-tuning and releases",
        minimum=0,
        maximum=1,
        exclusive_minimum=True,
    ),
    Setting(
        "max-queries-per-run",
        int,
        2,
        "most query, query.features and query.ood replies (each) in one run; "
        "query.normative: at most one",
        minimum=0,
    ),
    Setting(
        "max-evaluations-per-run",
        int,
        0,
        "most per-round evaluations of the model in one run (0: the final validation only)",
        minimum=0,
    ),
    Setting(
        "max-validations-per-run",
        int,
        1,
        "most final validations (evaluate.external, evaluate.normative: each) in one run",
        minimum=0,
    ),
    Setting(
        "max-releases-per-day",
        int,
        12,
        "most statistic releases (every kind but training) in one UTC day",
        minimum=0,
    ),
)

SITE_TOML = Schema(
    SITE_FILE,
    {"site": SITE_SETTINGS, "privacy": PRIVACY_SETTINGS},
    error=SiteConfigError,
    ignored_tables=IGNORED_TABLES,
)


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


def without_tables(text: str, tables: tuple[str, ...] = IGNORED_TABLES) -> str:
    """``text`` with the TOML tables ``tables`` (and their sub-tables) cut out, as text.

    The cut tables are never parsed: a broken or sensitive value in them cannot reach
    the process.
    """
    keep: list[str] = []
    inside = False
    for line in text.splitlines():
        m = _TABLE_HEADER.match(line)
        if m:
            name = m.group(1).strip().strip('"')
            inside = any(name == t or name.startswith(t + ".") for t in tables)
            if inside:
                continue
        if not inside:
            keep.append(line)
    return "\n".join(keep)


def read_site_toml(site_dir: Path) -> dict[str, dict[str, Any]]:
    """Every setting given in ``site_dir/site.toml``, typed and validated, per table.

    Returns
    -------
    dict
        ``{"site": {...}, "privacy": {...}}`` holding the keys the file sets (both empty
        when there is no file).

    Raises
    ------
    SiteConfigError
        The file cannot be read or parsed, or has an unknown table or key, a key outside
        its table, a wrong type or a value out of range; the message names the file and
        the key (and the close match).
    """
    path = Path(site_dir) / SITE_FILE
    if not path.is_file():
        return {table: {} for table in SITE_TOML.tables}
    try:
        document = tomllib.loads(without_tables(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError) as exc:
        raise SiteConfigError(f"{path}: cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SiteConfigError(f"{path}: not valid TOML ({exc})") from None
    return SITE_TOML.validate(document, str(path))


def load_site_config(site_dir: Path) -> SiteConfig:
    """``[site]`` of ``site_dir/site.toml`` (defaults when the file is absent).

    The whole file is validated (:func:`read_site_toml`), ``[privacy]`` included.

    Raises
    ------
    SiteConfigError
        When the file exists but is unusable (the message names the file and the key).
    """
    site_dir = Path(site_dir)
    table = read_site_toml(site_dir)["site"]
    return SiteConfig(
        site_id=table.get("site-id") or site_dir.resolve().name,
        role=table.get("role", "train"),
        task=table.get("task") or None,
        min_cell_count=table.get("min-cell-count", DEFAULT_MIN_CELL_COUNT),
    )
