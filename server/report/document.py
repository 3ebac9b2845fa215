"""What the coordinator writes to the run folder: checkpoints, final model, model card, report."""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import ArrayRecord

from fedmi.server.history import RunHistory
from fedmi.server.report.biomarker import biomarker_section
from fedmi.server.report.normative import normative_section
from fedmi.server.report.ood import ood_section
from fedmi.server.report.operating_point import federated_choice, operating_point_section
from fedmi.server.report.outcome import run_outcome
from fedmi.server.report.pretraining import pretraining_section
from fedmi.server.report.privacy import privacy_section
from fedmi.server.report.robustness import robustness_section
from fedmi.server.report.uncertainty import uncertainty_section
from fedmi.server.report.validation import data_counts, validation_section
from fedmi.shared.contract import array_record
from fedmi.shared.model import ModelSpec
from fedmi.shared.run_config import RunConfig
from fedmi.shared.tasks import get_task

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

#: 2: ``auc`` is the site's released Mann–Whitney AUC (``auc_histogram`` the binned one),
#: AUCs pooled on the logit scale, ``outcome`` added
REPORT_SCHEMA_VERSION = 2
#: JSON Schema of report.json (documented field by field in docs/report.md)
REPORT_SCHEMA = Path(__file__).with_name("report.schema.json")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_arrays(path: Path, arrays: ArrayRecord) -> None:
    """Federated weights as a NumPy ``.npz`` (name → array)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **{k: v.numpy() for k, v in arrays.items()})
    os.replace(tmp, path)


def load_arrays(path: Path) -> ArrayRecord:
    """Inverse of :func:`save_arrays`."""
    with np.load(path) as data:
        return array_record({k: data[k] for k in data.files})


def versions() -> dict[str, str]:
    import flwr
    import monai
    import torch

    from fedmi.shared.version import VERSION

    return {
        "fedmi": VERSION,
        "flwr": flwr.__version__,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
    }


def architecture(spec: ModelSpec, backbone: nn.Module) -> dict[str, object]:
    """The model spec, and for the regional model the regions its head's weights follow."""
    out: dict[str, object] = asdict(spec)
    regions = getattr(backbone, "region_names", None)
    if regions is not None:
        out["atlas"] = "AAL3 composites (shared.anatomy.parcellation)"
        out["regions"] = list(regions)  # head weight order
        if spec.task is not None:
            out["head_input"] = (
                "regional features minus the task template's (shared.regional.template_features)"
            )
    return out


def model_card(
    cfg: RunConfig, history: RunHistory, spec: ModelSpec, model: nn.Module
) -> dict[str, object]:
    """The model card: what the model is, what it was trained on, how inputs must be prepared."""
    task = get_task(cfg.task)
    train_sites = [
        {"site_id": s.site_id, "num_train": s.num_train}
        for s in history.sites.values()
        if s.role == "train"
    ]
    return {
        "task": task.name,
        "description": task.description,
        "modality": task.modality,
        "tracers": list(task.tracers),
        "classes": {"negative": task.classes[0], "positive": task.classes[1]},
        "output": "one logit; sigmoid gives the probability of the positive class",
        "input": {
            "grid_shape": list(task.grid.shape),
            "grid_spacing_mm": list(task.grid.spacing),
            "grid_origin_mm_ras": list(task.grid.origin),
            "space": "MNI152 2009a (RAS), head position corrected by centre of mass",
            "normalisation": f"SUV (PET) or counts (SPECT) divided by the mean in the {task.reference_region} reference region",
        },
        "architecture": architecture(spec, model.backbone),
        "training": {
            "method": cfg.method,
            "rounds": cfg.num_server_rounds,
            "local_epochs": cfg.effective_local_epochs,
            "batch_size": cfg.effective_batch_size,  # 0: whole split
            "learning_rate": cfg.effective_learning_rate,
            "optimizer": cfg.effective_optimizer,
            "seed": cfg.seed,
            "sites": train_sites,
        },
        "operating_point": federated_choice(cfg, history),  # read by `fedmi-site predict`
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def build_report(
    cfg: RunConfig, history: RunHistory, timing: dict[str, float], *, finished: bool = True
) -> dict[str, object]:
    """The report.json document (schema: report.schema.json beside this module; fields in
    docs/report.md). ``finished``: ``False`` for the reports written after each round, whose
    ``outcome`` is ``running``."""
    outcome = run_outcome(history) if finished else {"status": "running", "reasons": []}
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "outcome": outcome,
        "task": cfg.task,
        "method": cfg.method,
        "run_config": cfg.as_dict(),
        "sites": [asdict(s) | {"node_id": None} for s in history.sites.values()],
        "rounds": [history.rounds[r] for r in sorted(history.rounds)],
        "final": {
            "per_site": [{"site_id": k, **v} for k, v in sorted(history.final.items())],
            "pooled": {role: history.pooled(role) for role in ("train", "holdout")},
            "missing": history.missing_final,
        },
        "validation": validation_section(history, cfg.prevalences()),
        "data_counts": data_counts(history),
        # issue 16: replies whose claimed site id contradicts the node's registered identity
        "identity_refusals": history.identity_refusals,
        "privacy": privacy_section(cfg, history),
        # issue 22: federated self-supervised pretraining (None when the run did none)
        "pretraining": pretraining_section(cfg, history),
        "robustness": robustness_section(cfg, history),
        # issue 8: MC-dropout uncertainty, OOD detection, MCI conversion biomarker
        "uncertainty": uncertainty_section(history),
        "ood": ood_section(history),
        "biomarker": biomarker_section(history),
        "operating_point": operating_point_section(cfg, history),  # issue 18
        "normative": normative_section(history, cfg.task),  # issue 21
        "timing": timing,
    }


def write_report(out_dir: Path, report: dict[str, object]) -> Path:
    """Write ``report.json`` and its human-readable, self-contained ``report.html``."""
    from fedmi.server.report.html.page import render_html

    path = out_dir / "report.json"
    text = json.dumps(report, indent=2, default=_json_default)
    _atomic_write(path, text)
    _atomic_write(out_dir / "report.html", render_html(json.loads(text)))
    return path


def write_json(path: Path, data: object) -> None:
    _atomic_write(path, json.dumps(data, indent=2, default=_json_default))


def _json_default(o: object) -> object:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def _fmt(v: object, digits: int = 3) -> str:
    return "—" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def _ci(ci: object) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        return f"{ci[0]:.2f}–{ci[1]:.2f}"
    return "—"


def summary_table(report: dict) -> str:
    """A plain-text table of the final per-site results.

    ``AUC`` is the site-computed AUC of its unbinned scores with its 95 % interval (DeLong;
    under DP the noisy AUC with a noise-inclusive interval); ``hist AUC`` the AUC from the (small-cell-merged) score histograms with its
    binning bound; pooled rows only have the latter.
    """
    rows = [("site", "role", "n", "AUC", "95% CI", "hist AUC", "±bin", "sens", "spec")]
    final = report["final"]
    for r in final["per_site"]:
        if r.get("status") == "suppressed":
            rows.append((r["site_id"], r["role"], str(r["n"]), "suppressed", "", "", "", "", ""))
            continue
        rows.append(
            (
                r["site_id"],
                r["role"],
                str(r["n"]),
                _fmt(r.get("auc")),
                _ci(r.get("auc_ci")),
                _fmt(r["auc_histogram"]),
                _fmt(r["auc_histogram_bound"]),
                _fmt(r["sensitivity"]),
                _fmt(r["specificity"]),
            )
        )
    for role, p in final["pooled"].items():
        if p:
            rows.append(
                (
                    f"pooled {role}",
                    role,
                    str(p["n"]),
                    "—",
                    "",
                    _fmt(p["auc_histogram"]),
                    _fmt(p["auc_histogram_bound"]),
                    _fmt(p["sensitivity"]),
                    _fmt(p["specificity"]),
                )
            )
    for m in final.get("missing", []):
        rows.append((m["site_id"], m.get("role", "?"), "—", "missing", "", "", "", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    line = normative_line(report.get("normative"))
    return "\n".join([*lines, line] if line else lines)


def normative_line(section: dict | None) -> str | None:
    """One line on the normative model's anomaly AUC at the holdouts (``None``: no model)."""
    if not section:
        return None
    model = section.get("model")
    if not model:
        return "normative model: none (no training site sent usable statistics)"
    pooled = section.get("pooled_holdout") or {}
    aucs = ", ".join(
        f"{g} {_fmt(v.get('auc_histogram'))} [{_ci(v.get('ci'))}]"
        for g, v in (pooled.get("auc") or {}).items()
    )
    noise = (model.get("dp_noise") or {}).get("noise_dominated")
    note = " — DP noise dominates the model: not usable" if noise else ""
    return (
        f"normative model ({_fmt(model.get('n_scans'), 0)} normals): holdout anomaly AUC "
        f"{aucs or '—'}{note}"
    )
