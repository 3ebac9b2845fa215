"""The normative model at the site: its statistics for the federation, and its evaluation.

Two message types, both thin handlers over plain functions (:mod:`fedmi.shared.normative`
holds the maths):

* ``query.normative`` (training sites, :func:`handle_normative_statistics`): the count,
  ``XᵀX``, ``XᵀY`` and ``Σ y²`` of the design ``[1, age, sex]`` and the clipped regional
  profiles of the site's **normal** scans (labels.csv says the task's negative class, e.g.
  ``CN``), age and sex from each series' header ((0010,1010) *Patient's Age*, (0010,0040)
  *Patient's Sex*, read at ingest). With DP on, every block gets Gaussian noise at its L2
  sensitivity (:func:`fedmi.shared.normative.sensitivities`) under one release charged to
  the ledger first (:func:`fedmi.client.privacy.release.open_release`); a site with fewer
  normals than its small-cell k answers ``suppressed``.
* ``evaluate.normative`` (holdout sites, :func:`handle_normative_evaluation`): every
  labelled scan in the task's evaluation groups (:func:`fedmi.shared.normative.evaluation_groups`:
  normal first, then the disorders) is scored against the federation's model; the site
  releases fixed-bin histograms of the anomaly score per group, the fraction of regions
  below z = −2 in its normals (all, and those over 80; age-adjusted and unadjusted), how
  many scans' lowest regions match their disorder's pattern, and how many the supervised
  classifier calls positive. Noisy under DP (one release), small groups withheld without.
  Without DP every scan is scored after the **site's own offset** from its normals (leave
  one out for a normal; :meth:`fedmi.shared.normative.NormativeModel.own_offsets`), as
  ``fedmi-site predict`` scores a patient at a site with labelled normals. Under DP the
  population model is used as is: with an offset, one normal's data would move every other
  scan's score, and the release's noise is calibrated to one scan moving one count.

No profile, age, sex or per-scan score leaves the site.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedmi.client.data import accepted_rows, site_data
from fedmi.client.evaluation.private import noisy_counts
from fedmi.client.harmonization.adaptation import site_model
from fedmi.client.ingest.cache import read_volume
from fedmi.client.privacy.release import Release, ReleaseRefused, open_release
from fedmi.client.privacy.settings import PrivacySettings
from fedmi.client.replies import to_state
from fedmi.client.site.settings import SiteSettings
from fedmi.client.training.loop import predict
from fedmi.shared import contract
from fedmi.shared import normative as nm
from fedmi.shared.instructions import NormativeEvaluation, NormativeQuery
from fedmi.shared.tasks import get_task

log = logging.getLogger(__name__)

#: How a ``query.normative`` release divides its ρ among its blocks (the slopes and
#: intercepts, ``xty``, matter most).
STATS_MECHANISMS = {"count": 1.0, "xtx": 1.0, "xty": 4.0, "yty": 2.0}
#: How an ``evaluate.normative`` release divides its ρ.
EVAL_MECHANISMS = {"hist": 4.0, "fp": 2.0, "match": 1.0, "clf": 1.0}
#: Under DP the anomaly-score histograms go out in blocks of this many bins.
DP_BIN_BLOCK = contract.NORMATIVE_DP_BLOCK


@dataclass(frozen=True)
class Scans:
    """Profiles of a site's labelled scans, with what the normative model needs."""

    profiles: np.ndarray
    ages: list[float | None]
    sexes: list[str]
    labels: list[str]
    region_names: tuple[str, ...]
    paths: list[tuple[str, str | None]]

    def subset(self, labels: tuple[str, ...]) -> Scans:
        keep = [i for i, lab in enumerate(self.labels) if lab in labels]
        return Scans(
            self.profiles[keep],
            [self.ages[i] for i in keep],
            [self.sexes[i] for i in keep],
            [self.labels[i] for i in keep],
            self.region_names,
            [self.paths[i] for i in keep],
        )


def load_scans(site: SiteSettings, task_name: str, labels: tuple[str, ...]) -> Scans:
    """Regional profiles, ages and sexes of the site's accepted scans labelled ``labels``.

    Raises
    ------
    fedmi.client.data.NotIngested
        The site has not ingested (or labels.csv changed since).
    """
    task = get_task(task_name)
    rows = [r for r in accepted_rows(site, task_name) if r.get("label") in labels]
    profiles, ages, sexes, names = [], [], [], ()
    for row in rows:
        vol = read_volume(Path(row["cached_path"]), row.get("volume_sha256"))
        prof, names = nm.profile_of(vol, task.grid)
        profiles.append(prof)
        ages.append(row.get("age_years"))
        sexes.append(str(row.get("sex") or ""))
    if not names:
        names = nm.profile_of(np.ones(task.grid.shape), task.grid)[1]
    arr = np.array(profiles) if profiles else np.zeros((0, len(names)))
    return Scans(
        arr,
        ages,
        sexes,
        [str(r["label"]) for r in rows],
        names,
        [(r["cached_path"], r.get("volume_sha256")) for r in rows],
    )


def statistics_metrics(stats: nm.NormativeStatistics, clip: float) -> dict[str, object]:
    """The declared ``query.normative`` metrics of (possibly noisy) statistics."""
    return {
        "num-examples": 0,
        "nrm-count": float(stats.count),
        "nrm-xtx": [float(v) for v in stats.xtx.ravel()],
        "nrm-xty": [float(v) for v in stats.xty.ravel()],
        "nrm-yty": [float(v) for v in stats.yty],
        "nrm-noise-sd": [float(stats.noise_sd[k]) for k in ("count", "xtx", "xty", "yty")],
        "nrm-clip": float(clip),
    }


def private_statistics(
    stats: nm.NormativeStatistics, release: Release, clip: float
) -> nm.NormativeStatistics:
    """``stats`` with Gaussian noise on every block at its sensitivity (module docstring)."""
    sens = nm.sensitivities(clip)
    sd = {k: release.sd(k, sens[k]) for k in STATS_MECHANISMS}
    xtx = release.gaussian("xtx", stats.xtx, sens["xtx"])
    xtx = (xtx + xtx.T) / 2.0  # post-processing: the sum is symmetric
    return nm.NormativeStatistics(
        count=float(release.gaussian("count", stats.count, sens["count"])),
        xtx=xtx,
        xty=release.gaussian("xty", stats.xty, sens["xty"]),
        yty=release.gaussian("yty", stats.yty, sens["yty"]),
        noise_sd=sd,
    )


def handle_normative_statistics(
    site: SiteSettings,
    arrays: ArrayRecord,
    ins: NormativeQuery,
    *,
    privacy: PrivacySettings | None = None,
    run_id: int | str = "local",
) -> RecordDict:
    """``query.normative``: the site's normal scans' sufficient statistics (module docstring)."""
    record = {"site-id": site.site_id, "role": site.role, "task": ins.task}
    task = get_task(ins.task)
    metrics: dict[str, object] = {"num-examples": 0}
    status = "ok"
    if site.role != "train":
        status = "no-data"
    else:
        scans = load_scans(site, ins.task, (task.classes[0],))
        n = len(scans.labels)
        centre = np.zeros(len(scans.region_names)) if ins.centre is None else np.asarray(ins.centre)
        dp = privacy is not None and privacy.dp
        # the number of normals is label-derived: under DP it is released only as the noisy
        # count, and no decision the reply shows may rest on it (the noise protects small sites)
        if centre.shape != (len(scans.region_names),):
            status = "error"
        elif not dp and n < site.min_cell_count:
            status = "suppressed"
            metrics["num-examples"] = n
        else:
            stats = nm.site_statistics(scans.profiles, scans.ages, scans.sexes, centre, ins.clip)
            if dp:
                release = _open(site, privacy, run_id, ins.message_type, STATS_MECHANISMS)
                if isinstance(release, str):
                    status = release
                else:
                    stats = private_statistics(stats, release, ins.clip)
                    metrics = {
                        **statistics_metrics(stats, ins.clip),
                        "epsilon": release.epsilon,
                        "num-examples": int(max(round(stats.count), 0)),  # the noisy count
                    }
            elif status == "ok":
                metrics = {**statistics_metrics(stats, ins.clip), "num-examples": n}
            if status == "ok":
                unknown = sum(1 for a in scans.ages if a is None)
                log.info("normative statistics of %d normal scans (%d of unknown age)", n, unknown)
    return RecordDict(
        {
            contract.METRICS: MetricRecord(metrics),  # type: ignore[arg-type]
            contract.SITE: ConfigRecord({**record, "status": status}),
        }
    )


def score_histogram(scores: np.ndarray) -> np.ndarray:
    """Counts of anomaly scores in :data:`~fedmi.shared.contract.NORMATIVE_BINS` fixed bins."""
    lo, hi = contract.NORMATIVE_SCORE_RANGE
    edges = np.linspace(lo, hi, contract.NORMATIVE_BINS + 1)
    idx = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, contract.NORMATIVE_BINS - 1)
    return np.bincount(idx, minlength=contract.NORMATIVE_BINS)


@dataclass(frozen=True)
class Evaluation:
    """Exact per-group results at one site (before any suppression or noise)."""

    hist: np.ndarray  # (G, bins)
    old_count: int
    old_fp: tuple[float, float]
    fp: tuple[float, float]
    match: np.ndarray  # (G,)
    clf_positive: np.ndarray  # (G,)


def evaluate_scans(
    scans: Scans,
    groups: tuple[str, ...],
    model: nm.NormativeModel,
    reference: nm.NormativeModel,
    probabilities: np.ndarray,
    threshold: float,
    own_offsets: bool = False,
) -> Evaluation:
    """Anomaly scores, false-positive fractions, pattern matches and classifier calls.

    ``own_offsets``: every scan is scored after the site's own offset, estimated from its
    normals (``groups[0]``) and, for a normal, without that scan
    (:meth:`fedmi.shared.normative.NormativeModel.own_offsets`), for the model and for the
    unadjusted reference alike.
    """
    g_max = contract.NORMATIVE_GROUPS
    n = len(scans.labels)
    offsets: list = [None] * n
    ref_offsets: list = [None] * n
    if own_offsets:
        normal = [lab == groups[0] for lab in scans.labels]
        offsets = model.own_offsets(scans.profiles, scans.ages, scans.sexes, normal)
        ref_offsets = reference.own_offsets(scans.profiles, scans.ages, scans.sexes, normal)
    hist = np.zeros((g_max, contract.NORMATIVE_BINS), dtype=np.int64)
    match = np.zeros(g_max, dtype=np.int64)
    clf = np.zeros(g_max, dtype=np.int64)
    fp = np.zeros(2)
    old_fp = np.zeros(2)
    old = 0
    for gi, group in enumerate(groups[:g_max]):
        idx = [i for i, lab in enumerate(scans.labels) if lab == group]
        scores = []
        for i in idx:
            z = model.zscores(scans.profiles[i], scans.ages[i], scans.sexes[i], offsets[i])
            scores.append(nm.anomaly_score(z))
            if group in nm.DISORDER_REGIONS:
                match[gi] += int(nm.pattern_match(z, scans.region_names, group))
            clf[gi] += int(probabilities[i] >= threshold)
            if gi == 0:
                z_ref = reference.zscores(
                    scans.profiles[i], scans.ages[i], scans.sexes[i], ref_offsets[i]
                )
                frac = np.array([np.mean(z < nm.Z_THRESHOLD), np.mean(z_ref < nm.Z_THRESHOLD)])
                fp += frac
                age = scans.ages[i]
                if age is not None and age >= contract.NORMATIVE_OLD_AGE:
                    old += 1
                    old_fp += frac
        if scores:
            hist[gi] = score_histogram(np.asarray(scores))
    return Evaluation(hist, old, (old_fp[0], old_fp[1]), (fp[0], fp[1]), match, clf)


def evaluation_metrics(ev: Evaluation, k: int) -> dict[str, object]:
    """Exact ``evaluate.normative`` metrics; a group with fewer than ``k`` scans is withheld
    (zeros in all its fields), and so are the over-80 figures with fewer than ``k`` normals."""
    hist, match, clf = ev.hist.copy(), ev.match.copy(), ev.clf_positive.copy()
    small = hist.sum(axis=1) < k
    hist[small], match[small], clf[small] = 0, 0, 0
    old_ok = ev.old_count >= k
    return {
        "num-examples": int(ev.hist.sum()),
        "min-cell-count": int(k),
        "nrm-hist": [int(v) for v in hist.ravel()],
        "nrm-old-count": float(ev.old_count if old_ok else 0),
        "nrm-old-fp": [float(v) for v in ev.old_fp] if old_ok else [0.0, 0.0],
        "nrm-fp": [float(v) for v in ev.fp] if not small[0] else [0.0, 0.0],
        "nrm-match": [int(v) for v in match],
        "nrm-clf-positive": [int(v) for v in clf],
    }


def private_evaluation_metrics(ev: Evaluation, release: Release, k: int) -> dict[str, object]:
    """``evaluate.normative`` metrics under DP (one release, four mechanisms).

    One scan lies in one group: it moves one histogram cell, one match count and one
    classifier count by at most 1 each (sensitivity 1), and the false-positive block (the
    over-80 count, its two fraction sums, all normals' two fraction sums; each fraction in
    [0, 1]) by at most √5 in L2. The histograms go out in blocks of :data:`DP_BIN_BLOCK`
    bins (fewer noisy cells); ``nrm-noise-sd`` says each block's noise (histogram cell,
    false-positive entry, match and classifier counts), for the coordinator's intervals.
    """
    fp_block = np.array([ev.old_count, *ev.old_fp, *ev.fp], dtype=np.float64)
    noisy_fp = np.clip(release.gaussian("fp", fp_block, np.sqrt(5.0)), 0.0, None)
    # coarse blocks of DP_BIN_BLOCK bins (fewer noisy cells), put back in the block's middle
    g, b = ev.hist.shape
    coarse = ev.hist.reshape(g, b // DP_BIN_BLOCK, DP_BIN_BLOCK).sum(axis=2)
    noisy = np.asarray(noisy_counts(release, "hist", coarse.ravel())).reshape(coarse.shape)
    hist = np.zeros_like(ev.hist)
    hist[:, DP_BIN_BLOCK // 2 :: DP_BIN_BLOCK] = noisy
    return {
        "num-examples": int(hist.sum()),  # the noisy total: group sizes are label-derived
        "min-cell-count": int(k),
        "epsilon": release.epsilon,
        "nrm-noise-sd": [release.sd(m, 1.0) for m in ("hist", "fp", "match", "clf")],
        "nrm-hist": [int(v) for v in hist.ravel()],
        "nrm-old-count": float(noisy_fp[0]),
        "nrm-old-fp": [float(v) for v in noisy_fp[1:3]],
        "nrm-fp": [float(v) for v in noisy_fp[3:5]],
        "nrm-match": noisy_counts(release, "match", ev.match),
        "nrm-clf-positive": noisy_counts(release, "clf", ev.clf_positive),
    }


def handle_normative_evaluation(
    site: SiteSettings,
    arrays: ArrayRecord,
    ins: NormativeEvaluation,
    *,
    privacy: PrivacySettings | None = None,
    run_id: int | str = "local",
) -> RecordDict:
    """``evaluate.normative``: the anomaly score's evaluation at the site (module docstring)."""
    record = {"site-id": site.site_id, "role": site.role, "task": ins.task}
    metrics: dict[str, object] = {"num-examples": 0}
    status = "ok"
    groups = nm.evaluation_groups(ins.task)
    scans = load_scans(site, ins.task, groups)
    model, reference = ins.models
    k = site.min_cell_count
    if len(scans.labels) == 0 or model.region_names != scans.region_names:
        status = "no-data" if len(scans.labels) == 0 else "error"
    else:
        probabilities = _classifier_probabilities(site, ins, arrays, scans)
        dp = privacy is not None and privacy.dp
        ev = evaluate_scans(
            scans, groups, model, reference, probabilities, ins.threshold, own_offsets=not dp
        )
        if dp:
            release = _open(site, privacy, run_id, ins.message_type, EVAL_MECHANISMS)
            if isinstance(release, str):
                status = release
            else:
                metrics = private_evaluation_metrics(ev, release, k)
        else:
            metrics = evaluation_metrics(ev, k)
        if status == "ok":
            counts = {g: int(ev.hist[i].sum()) for i, g in enumerate(groups)}
            log.info("normative evaluation: scans per group %s", counts)
    return RecordDict(
        {
            contract.METRICS: MetricRecord(metrics),  # type: ignore[arg-type]
            contract.SITE: ConfigRecord({**record, "status": status}),
        }
    )


def _open(
    site: SiteSettings,
    privacy: PrivacySettings | None,
    run_id: int | str,
    kind: str,
    mechanisms: dict[str, float],
) -> Release | str:
    """The charged release, or the status the site refuses with (nothing charged then)."""
    try:
        return open_release(
            site,
            privacy,  # type: ignore[arg-type]
            run_id=str(run_id),
            kind=kind,
            mechanisms=mechanisms,
        )
    except ReleaseRefused as exc:
        return exc.status


def _classifier_probabilities(
    site: SiteSettings, ins: NormativeEvaluation, arrays: ArrayRecord, scans: Scans
) -> np.ndarray:
    """The supervised classifier's probability for each scan (as the site evaluates it)."""
    data = site_data(site, ins.task, ins.seed)
    model, _, _, _ = site_model(site, ins, to_state(arrays), data, "all")
    vols = [read_volume(Path(p), sha) for p, sha in scans.paths]
    x = torch.from_numpy(np.stack(vols)[:, None].astype(np.float32))
    return predict(model, x)
