"""The federated normative model: its fit from the training sites, its holdout evaluation.

After training (and only when the run builds one, :attr:`RunConfig.builds_normative_model`):

1. ``query.normative`` to the training sites (:func:`collect_normative_model`): each sends
   the sufficient statistics of its normal scans (noisy under DP, charged to its ledger);
   the coordinator fits the age-adjusted model and, from the same statistics, the
   unadjusted reference (:func:`fedmi.shared.normative.fit`). The fit and what it used are
   kept on the history for the report; the model goes into the model package.
2. ``evaluate.normative`` to the holdout sites (:func:`normative_validation`), with both
   models and the final weights: each sends its anomaly-score histograms per group and the
   other declared aggregates (:mod:`fedmi.client.normative`), which
   :mod:`fedmi.server.report.normative` turns into the report's section.
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.app import ArrayRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedmi.server.federation.collect import collect_from_training_sites
from fedmi.server.history import RunHistory
from fedmi.server.ingress import check_inbound
from fedmi.shared import contract
from fedmi.shared import normative as nm
from fedmi.shared.instructions import NormativeEvaluation, NormativeQuery
from fedmi.shared.run_config import RunConfig

log = logging.getLogger(__name__)

_NOISE_KEYS = ("count", "xtx", "xty", "yty")


def statistics_from_metrics(metrics: dict) -> nm.NormativeStatistics | None:
    """A checked ``query.normative`` reply's metrics as statistics (``None``: none sent)."""
    if "nrm-xty" not in metrics:
        return None
    r = len(metrics["nrm-yty"])
    return nm.NormativeStatistics(
        count=float(metrics["nrm-count"]),
        xtx=np.asarray(metrics["nrm-xtx"], dtype=np.float64).reshape(
            contract.NORMATIVE_DESIGN, contract.NORMATIVE_DESIGN
        ),
        xty=np.asarray(metrics["nrm-xty"], dtype=np.float64).reshape(contract.NORMATIVE_DESIGN, r),
        yty=np.asarray(metrics["nrm-yty"], dtype=np.float64),
        noise_sd=dict(zip(_NOISE_KEYS, (float(v) for v in metrics["nrm-noise-sd"]), strict=True)),
    )


def fit_from_replies(
    answers: list[tuple[str, dict]], region_names: tuple[str, ...], centre: np.ndarray
) -> tuple[nm.NormativeModel, nm.NormativeModel, dict[str, object]] | None:
    """The adjusted model, the unadjusted reference and a summary, from named replies.

    Replies whose region count differs from ``region_names`` are left out (named in the
    summary). ``None`` when no usable reply remains or the fit fails (logged).
    """
    parts, used, skipped = [], [], []
    for name, metrics in answers:
        stats = statistics_from_metrics(metrics)
        if stats is None:
            continue
        if stats.n_regions != len(region_names):
            skipped.append(name)
            continue
        parts.append(stats)
        used.append(name)
    if not parts:
        log.warning("no usable normative statistics: the run has no normative model")
        return None
    try:
        model = nm.fit(parts, region_names, centre)
        reference = nm.fit(parts, region_names, centre, adjust_age=False)
    except nm.NormativeError as exc:
        log.warning("the normative model could not be fitted: %s", exc)
        return None
    summary = {
        "sites": sorted(used),
        "skipped_sites": sorted(skipped),
        "n_scans": round(float(model.n_scans), 1),
        "regions": len(region_names),
        "dp": model.dp,
        "noise_sd": {
            name: dict(
                zip(_NOISE_KEYS, [round(p.noise_sd[k], 6) for k in _NOISE_KEYS], strict=True)
            )
            for name, p in zip(used, parts, strict=True)
        },
        "median_sigma": float(np.median(np.sqrt(model.sigma2))),
        "dp_noise": _noise_summary(parts, model),
        "median_tau": float(np.median(np.sqrt(model.tau2))),
        "age_slope_per_decade": {
            name: round(float(model.slopes[0][i]) / (nm.AGE_SPAN / 10.0), 5)
            for i, name in enumerate(region_names)
        },
    }
    log.info(
        "normative model from %d site(s), %.0f normal scans (median σ %.3f, τ %.3f)",
        len(parts),
        model.n_scans,
        summary["median_sigma"],
        summary["median_tau"],
    )
    return model, reference, summary


#: The fit is flagged noise-dominated when DP noise alone moves the intercepts by more than
#: this fraction of the normal variation σ, or the variances by this fraction of σ² (its
#: z-scores then mostly measure the noise).
NOISE_DOMINATED = 0.5


def _noise_summary(parts: list[nm.NormativeStatistics], model: nm.NormativeModel) -> dict:
    """How much the sites' DP noise moves the fit, relative to what it estimates.

    ``intercept_sd``: the noise's sd in the population intercept (``√(Σ sd²_xty) / n``),
    relative to the median σ; ``sigma2_sd``: the noise's sd in a region's σ² estimate
    (``√(Σ sd²_yty) / dof``), relative to the median σ². Under heavy noise the fit floors σ²
    at that noise, so the first ratio alone would look harmless: either ratio above
    :data:`NOISE_DOMINATED` flags the model.
    """
    n = max(float(model.n_scans), 1.0)
    dof = max(n - model.n_sites - 2, 1.0)
    intercept_sd = float(np.sqrt(sum(p.noise_sd.get("xty", 0.0) ** 2 for p in parts))) / n
    sigma2_sd = float(np.sqrt(sum(p.noise_sd.get("yty", 0.0) ** 2 for p in parts))) / dof
    sigma2 = float(np.median(model.sigma2))
    sigma = float(np.sqrt(sigma2))
    ratio = intercept_sd / sigma if sigma > 0 else float("inf")
    ratio2 = sigma2_sd / sigma2 if sigma2 > 0 else float("inf")
    return {
        "intercept_sd": round(intercept_sd, 6),
        "relative_to_sigma": round(ratio, 4),
        "sigma2_sd": round(sigma2_sd, 6),
        "relative_to_sigma2": round(ratio2, 4),
        "noise_dominated": bool(max(ratio, ratio2) > NOISE_DOMINATED),
    }


def collect_normative_model(
    grid: Grid,
    arrays: ArrayRecord,
    cfg: RunConfig,
    history: RunHistory,
    region_names: tuple[str, ...],
) -> tuple[nm.NormativeModel, nm.NormativeModel] | None:
    """Ask the training sites for their normal scans' statistics; the fitted models."""
    centre = np.zeros(len(region_names))
    instruction = NormativeQuery.from_run_config(cfg, clip=cfg.normative_clip)
    answers = collect_from_training_sites(grid, arrays, instruction, cfg, history)
    named = [(history.site_name(node), metrics) for node, metrics in answers]
    fitted = fit_from_replies(named, region_names, centre)
    if fitted is None:
        history.normative = {"model": None, "sites": {}}
        return None
    model, reference, summary = fitted
    summary["clip"] = cfg.normative_clip
    history.normative = {"model": summary, "sites": {}}
    return model, reference


def normative_validation(
    grid: Grid,
    arrays: ArrayRecord,
    cfg: RunConfig,
    history: RunHistory,
    models: tuple[nm.NormativeModel, nm.NormativeModel],
    threshold: float,
) -> None:
    """Send ``evaluate.normative`` to the holdout sites; keep each accepted reply's metrics
    on ``history.normative["sites"]`` (site id → metrics)."""
    model, reference = models
    instruction = NormativeEvaluation.from_run_config(
        cfg,
        normative_model=model.to_json(),
        normative_reference=reference.to_json(),
        threshold=float(threshold),
    )
    targets = [n for n, s in history.sites.items() if s.role == "holdout" and s.status == "ok"]
    if not targets:
        return
    msgs = [
        Message(
            content=RecordDict({contract.ARRAYS: arrays, contract.CONFIG: instruction.to_record()}),
            dst_node_id=n,
            message_type=instruction.message_type,
        )
        for n in targets
    ]
    try:
        replies = list(grid.send_and_receive(msgs, timeout=cfg.validation_timeout))
    except Exception as exc:  # noqa: BLE001 - the run goes on without this round
        log.error("evaluate.normative round failed: %s: %s", type(exc).__name__, exc)
        return
    sites = history.normative.setdefault("sites", {})
    for msg in replies:
        verdict = check_inbound(instruction.message_type, msg, None, cfg.max_examples)
        if verdict.node_id not in targets:
            continue
        metrics = dict(msg.content.get(contract.METRICS) or {}) if not verdict.problems else {}
        history.record_release(instruction.message_type, verdict.node_id, verdict.status, metrics)
        name = history.site_name(verdict.node_id)
        sites[name] = {"status": verdict.status, "metrics": metrics if verdict.accepted else {}}
