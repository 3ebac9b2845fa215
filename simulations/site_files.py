"""The small text files of a generated site: ``site.toml``, ``labels.csv`` and the truth CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from fedmi.simulations.sites.profiles import SiteProfile


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def write_site_toml(path: Path, site: SiteProfile) -> None:
    """Write ``site.toml``: ``[site]`` (read by the pipeline) and ``[truth]`` (never read)."""
    lines = [
        "# Synthetic site written by fedmi-sim. The pipeline reads [site] only;",
        "# [truth] is generator truth for evaluation and must never be used by fedmi.",
        "[site]",
        f"site-id = {_toml_value(site.site_id)}",
        f"role = {_toml_value(site.role)}",
        f"task = {_toml_value(site.task)}",
        "",
        "# The site's own differential-privacy settings (read by client/privacy.py).",
        "# DP-SGD is on with the defaults (epsilon 8, delta 1e-5) unless set here, e.g.",
        '# dp = "off" or epsilon = 3.0; a simulation run may set defaults for every site',
        "# (sim-default-dp, sim-default-epsilon) that a value here overrides.",
        "[privacy]",
        "",
        "[truth]",
    ]
    truth = site.truth()
    tables = {k: v for k, v in truth.items() if isinstance(v, dict)}
    for k, v in truth.items():
        if not isinstance(v, dict):
            lines.append(f"{k.replace('_', '-')} = {_toml_value(v)}")
    for k, table in tables.items():
        lines += ["", f"[truth.{k.replace('_', '-')}]"]
        lines += [f"{_toml_value(str(kk))} = {_toml_value(vv)}" for kk, vv in table.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_csv(path: Path, rows: list[dict[str, object]], columns: list[str] | None = None) -> None:
    """Write ``rows`` (``None`` as empty cells); by default every column some row fills."""
    if columns is None:  # union of keys, minus columns that are empty for every row
        columns = []
        for r in rows:
            columns += [
                c for c in r if c not in columns and any(x.get(c) is not None for x in rows)
            ]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in columns})
