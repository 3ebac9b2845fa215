"""``fedmi-site predict``: the federation's verified model on new studies, at the site.

Flow of :func:`predict_folder`:

1. verify the model package against the site's pinned coordinator key
   (:func:`fedmi.client.model.load_verified`); nothing runs without a verified package;
2. ingest the DICOM folder with the very pipeline training used
   (:func:`fedmi.client.ingest.pipeline.ingest_site`, label-free: no labels.csv), into a
   private work folder under ``OUT``;
3. every series ingest rejected (wrong tracer, not a brain/PET/SPECT series, failed
   quality checks, ...) is reported *not assessable* with ingest's reason, never a class;
   so is a series whose embedding lies beyond the federation's OOD flagging distance
   (when the package holds the OOD reference, ``ood_reference.json``);
4. every ingested series gets the probability (the function the federation's evaluation
   uses, :func:`fedmi.client.training.loop.predict`), the class at the package's operating
   point, an MC-dropout interval, and the regional values that drive the logit;
5. when the package holds the federation's normative model (``normative_model.json``),
   every scored study (assessable, or beyond the classifier's OOD distance) is also
   compared with it (:mod:`fedmi.client.anomaly`): age- and
   sex-adjusted regional z-scores, the anomaly score, the regions below z = −2 and a
   template-space z-map (``study-NNN-zmap.npy``) drawn over the scan;
6. one JSON record, one HTML report and one A4 PDF report (:mod:`fedmi.client.report_pdf`)
   per study (research use only), and per assessable study a DICOM SR, a Secondary Capture
   and an Encapsulated PDF of the report in new series of its study, plus a Secondary
   Capture of the z-map when there is one (:mod:`fedmi.client.dicom_out`).

``--watch`` runs the same path on the study folders that arrive in ``--dicom``
(:mod:`fedmi.client.watch`).

Nothing written here leaves the site.
"""

from __future__ import annotations

import html
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedmi.client.model import load_verified
from fedmi.client.research_use import RESEARCH_USE
from fedmi.shared.normative import ANOMALY_K
from fedmi.shared.package import NORMATIVE, OOD, WEIGHTS, ModelPackage

if TYPE_CHECKING:  # torch is imported where it is used: `fedmi-site --help` stays fast
    import torch

    from fedmi.shared.grid import Grid
    from fedmi.shared.normative import NormativeModel

log = logging.getLogger(__name__)

#: How many regions the report lists.
TOP_REGIONS = 5
#: Central MC-dropout interval.
INTERVAL = (2.5, 97.5)
RECORD_SCHEMA_VERSION = 1


@dataclass
class LoadedModel:
    """The package's network, ready to score ingested volumes."""

    package: ModelPackage
    model: torch.nn.Module
    threshold: float
    threshold_source: str
    #: The federation's normative model (package member ``normative_model.json``) and the
    #: task grid it scores on; ``None`` without the member.
    normative: NormativeModel | None = None
    grid: Grid | None = None
    #: The site's own offset for the normative model and how many normals gave it
    #: (:func:`fedmi.client.anomaly.site_offset_from_ingest`); ``None``: not used.
    site_offset: tuple[np.ndarray, np.ndarray] | None = None
    site_normals: int = 0


def load_model(pkg: ModelPackage, state_dir: Path | None = None) -> LoadedModel:
    """Build the card's architecture and load the package's federated weights.

    The site-local harmonization layers stay identity (a site that never trained them),
    which is the model the federation's final evaluation used for plain methods. With
    ``state_dir`` and a normative model, the site's own offset comes from the normals of
    its federation ingest (``state_dir/ingest``; :func:`fedmi.client.anomaly.site_offset_from_ingest`).

    Raises
    ------
    PackageError
        The package's normative model member is malformed (nothing is scored).
    """
    import io

    import torch

    from fedmi.shared.model import ModelSpec, build_model, load_federated_state

    arch = dict(pkg.card["architecture"])
    fields = {k: arch[k] for k in ModelSpec.__dataclass_fields__ if k in arch}
    for k, v in fields.items():
        if isinstance(v, list):
            fields[k] = tuple(v)
    model = build_model(ModelSpec(**fields))
    with np.load(io.BytesIO(pkg.members[WEIGHTS])) as data:
        state = {k: torch.from_numpy(data[k]) for k in data.files}
    load_federated_state(model, state)
    model.eval()
    threshold, source = pkg.threshold
    normative, grid = None, None
    if NORMATIVE in pkg.members:
        from fedmi.client.anomaly import load_normative
        from fedmi.shared.tasks import get_task

        grid = get_task(str(pkg.card["task"])).grid
        normative = load_normative(pkg, grid)
    loaded = LoadedModel(pkg, model, threshold, source, normative, grid)
    if normative is not None and grid is not None and state_dir is not None:
        from fedmi.client.anomaly import site_offset_from_ingest

        loaded.site_offset, loaded.site_normals = site_offset_from_ingest(
            normative, Path(state_dir) / "ingest", str(pkg.card["task"]), grid
        )
        log.info(
            "normative model: %s",
            f"this site's own offset from {loaded.site_normals} normal(s)"
            if loaded.site_offset is not None
            else "no labelled normals at this site: the population model alone",
        )
    return loaded


def _regional(model: torch.nn.Module, x: torch.Tensor) -> list[list[dict]] | None:
    """Per scan, the regions contributing most to the logit (regional model only).

    The regional head is linear on standardised log-ratios centred on the task template's
    pattern, so the logit is exactly ``bias + Σ_r w_r (f_r − t_r)``; each region's
    ``w_r (f_r − t_r)`` is its share, reported with the regional ratio to the reference
    region (SUVR for PET) and its standardised value ``f_r``.
    """
    import torch

    backbone = getattr(model, "backbone", None)
    names = getattr(backbone, "region_names", None)
    if names is None:
        return None
    with torch.no_grad():
        h = model.harmonizer(x)
        suvr = backbone.encoder[0](h)
        feats = backbone.encoder(h)  # eval: dropout off
        contrib = backbone.head_input(feats) * backbone.head.weight[0]
    out = []
    for i in range(x.shape[0]):
        order = torch.argsort(contrib[i].abs(), descending=True)[:TOP_REGIONS]
        out.append(
            [
                {
                    "region": names[int(r)],
                    "suvr": round(float(suvr[i, r]), 4),
                    "z": round(float(feats[i, r]), 3),
                    "logit_contribution": round(float(contrib[i, r]), 4),
                }
                for r in order
            ]
        )
    return out


def _not_assessable(row: dict) -> dict:
    return {
        "series_uid": row.get("series_uid"),
        "files": row.get("files", [])[:5],
        "assessable": False,
        "reason": row["reason"],
        "message": row["message"],
    }


def ood_distances(loaded: LoadedModel, x: torch.Tensor) -> tuple[np.ndarray | None, float]:
    """Each scan's smallest Mahalanobis distance to the training classes, and the package's
    flagging distance; ``(None, inf)`` when the package has no OOD reference."""
    import torch

    from fedmi.shared.ood import description_from_config, mahalanobis_scores

    raw = loaded.package.members.get(OOD)
    if raw is None:
        return None, float("inf")
    config = json.loads(raw)
    desc = description_from_config(config)
    if desc is None or config.get("threshold_distance") is None:
        return None, float("inf")
    with torch.no_grad():
        feats = loaded.model.features(x).double().numpy()
    return mahalanobis_scores(feats, desc), float(config["threshold_distance"])


def score_rows(
    loaded: LoadedModel,
    rows: list[dict],
    mc_passes: int = 20,
    maps: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> list[dict]:
    """Records of ingested series (``cached_path`` absolute), in ``rows`` order.

    With a normative model every scored record — assessable or beyond the OOD distance —
    gets its ``normative`` comparison (:func:`fedmi.client.anomaly.normative_record`;
    ``None`` without the model), and
    ``maps`` (when given) receives series UID → (z-map, scan) on the template grid.
    """
    import torch

    from fedmi.client.evaluation.uncertainty import mc_dropout_probabilities
    from fedmi.client.ingest.cache import read_volume
    from fedmi.client.training.loop import predict

    if not rows:
        return []
    x = torch.from_numpy(
        np.stack([read_volume(Path(r["cached_path"]), r.get("volume_sha256")) for r in rows])[
            :, None
        ]
    )
    model = loaded.model
    probs = predict(model, x, device=torch.device("cpu"))
    passes = mc_dropout_probabilities(model, x, mc_passes)
    lo, hi = np.percentile(passes, INTERVAL, axis=0)
    regional = _regional(model, x)
    distances, limit = ood_distances(loaded, x)
    classes = loaded.package.card.get("classes", {})
    out = []

    def compare(rec: dict, i: int, row: dict) -> None:
        """The normative comparison (independent of the classifier: OOD studies get it too)."""
        rec["normative"] = None
        if loaded.normative is not None and loaded.grid is not None:
            from fedmi.client.anomaly import normative_record, zmap_volume

            volume = x[i, 0].numpy()
            rec["normative"], z = normative_record(
                loaded.normative,
                volume,
                loaded.grid,
                row.get("age_years"),
                row.get("sex"),
                loaded.site_offset,
                loaded.site_normals,
            )
            if maps is not None:
                maps[str(row["series_uid"])] = (zmap_volume(z, loaded.grid), volume)

    for i, row in enumerate(rows):
        if distances is not None and distances[i] > limit:
            rec = {
                "series_uid": row["series_uid"],
                "assessable": False,
                "reason": "out_of_distribution",
                "message": (
                    f"the study's features lie {distances[i]:.2f} (Mahalanobis) from the "
                    f"training data, beyond the federation's flagging distance {limit:.2f} "
                    "(the 95th percentile of the training sites' own test scans): the model "
                    "was not trained on studies like this one"
                ),
                "ood_distance": float(distances[i]),
            }
            # a scan unlike the classifier's training data is what the normative model is for
            compare(rec, i, row)
            out.append(rec)
            continue
        p = float(probs[i])
        positive = p >= loaded.threshold
        rec = {
            "series_uid": row["series_uid"],
            "assessable": True,
            "probability": p,
            "class": classes.get("positive" if positive else "negative"),
            "positive": bool(positive),
            "threshold": loaded.threshold,
            "threshold_source": loaded.threshold_source,
            "interval": {
                "method": f"MC dropout, {mc_passes} passes, central 95 %",
                "low": float(lo[i]),
                "high": float(hi[i]),
                "crosses_threshold": bool(lo[i] < loaded.threshold <= hi[i]),
            },
            "tracer": row.get("tracer"),
            "ood_distance": None if distances is None else float(distances[i]),
            "qc_flags": list(row.get("qc", {}).get("flags", [])),
        }
        if regional is not None:
            rec["regions"] = regional[i]
        compare(rec, i, row)
        out.append(rec)
    return out


def _study_uid(site_dir: Path, relpath: str) -> str | None:
    import pydicom

    try:
        ds = pydicom.dcmread(site_dir / relpath, stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - unreadable files have their reason already
        return None
    return str(ds.get("StudyInstanceUID", "")) or None


def predict_folder(
    package: Path,
    state_dir: Path,
    dicom_dir: Path,
    out_dir: Path,
    *,
    mc_passes: int = 20,
    dicom_out: bool = True,
) -> list[dict]:
    """Predict every series under ``dicom_dir``; the records (also written to ``out_dir``).

    With ``dicom_out`` every assessable study also gets a DICOM SR, a Secondary Capture
    and an Encapsulated PDF of its report in ``out_dir/dicom``
    (:mod:`fedmi.client.dicom_out`).

    Raises
    ------
    PackageError
        The package is not verified against the site's pinned key (nothing else runs).
    """
    from fedmi.client.private_files import private_dir

    t0 = time.perf_counter()
    pkg = load_verified(package, state_dir)
    loaded = load_model(pkg, state_dir)
    out_dir = private_dir(Path(out_dir))
    work = private_dir(out_dir / ".work")
    site = private_dir(work / "site")
    link = site / "dicom"
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(Path(dicom_dir).resolve(), link)
    records = predict_site(
        loaded, site, work / "ingest", out_dir, mc_passes=mc_passes, dicom_out=dicom_out
    )
    log.info("%d series predicted in %.1f s", len(records), time.perf_counter() - t0)
    return records


#: A series' files as ingest indexed them: ``(relpath, size, mtime_ns)``.
FileStamp = tuple[str, int, int]


def predict_site(
    loaded: LoadedModel,
    site: Path,
    ingest_dir: Path,
    out_dir: Path,
    *,
    mc_passes: int = 20,
    dicom_out: bool = True,
    keep: Callable[[str | None, list[FileStamp]], bool] | None = None,
    first_number: int = 1,
) -> list[dict]:
    """Ingest ``site/dicom`` into ``ingest_dir`` and write a record per series to ``out_dir``.

    ``keep(series_uid, files)``, when given, says which series (ingested or rejected) are
    scored and reported (the watch mode's already-processed series are not); reports are
    numbered ``study-NNN`` from ``first_number``. Returns the records, in that order.
    """
    from fedmi.client.ingest.cache import load_index
    from fedmi.client.ingest.pipeline import ingest_site
    from fedmi.client.ingest.report import load_accepted, load_unlabelled

    pkg = loaded.package
    report = ingest_site(site, str(pkg.card["task"]), ingest_dir)
    index = load_index(ingest_dir)
    first_file: dict[str, str] = {}
    by_series: dict[str, list[FileStamp]] = {}
    for rel, entry in sorted(index.items()):
        uid = str(entry.get("series_uid") or "")
        first_file.setdefault(uid, rel)
        by_series.setdefault(uid, []).append(
            (rel, int(entry.get("size") or 0), int(entry.get("mtime_ns") or 0))
        )

    def stamps(uid: str | None, files: list[str]) -> list[FileStamp]:
        if uid and uid in by_series:
            return by_series[uid]
        return [
            (f, int(index.get(f, {}).get("size") or 0), int(index.get(f, {}).get("mtime_ns") or 0))
            for f in files
        ]

    rows = load_unlabelled(ingest_dir) + load_accepted(ingest_dir)
    rejected = [r for r in report.rejected if r["reason"] != "duplicate_instance"]
    if keep is not None:
        rows = [r for r in rows if keep(r["series_uid"], stamps(r["series_uid"], []))]
        rejected = [
            r
            for r in rejected
            if keep(r.get("series_uid"), stamps(r.get("series_uid"), r.get("files", [])))
        ]
    maps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    records = score_rows(loaded, rows, mc_passes, maps)
    for rec, row in zip(records, rows, strict=True):
        rec["files"] = row.get("n_files")
    records += [_not_assessable(r) for r in rejected]
    for rec in records:
        rel = first_file.get(str(rec["series_uid"] or ""))
        # (0020,000D) Study Instance UID of the input: the study the results belong to
        rec["study_uid"] = _study_uid(site, rel) if rel else None
        rec["schema_version"] = RECORD_SCHEMA_VERSION
        rec["model"] = {"version": pkg.version, "device_uid": pkg.device_uid}
        rec["research_use"] = RESEARCH_USE
    figures: dict[str, np.ndarray] = {}
    if maps and loaded.grid is not None:
        from fedmi.client.anomaly import summary_line, zmap_figure

        for rec in records:
            uid = str(rec["series_uid"] or "")
            if rec.get("normative") and uid in maps:
                zmap, volume = maps[uid]
                title = f"fedmi anomaly map (research use only): {summary_line(rec['normative'])}"
                figures[uid] = zmap_figure(zmap, volume, loaded.grid, title[:110])
    from fedmi.client.report_pdf import report_pdf

    pdfs = [report_pdf(rec, pkg, figures.get(str(rec["series_uid"] or ""))) for rec in records]
    if dicom_out:
        from fedmi.client.dicom_out import write_results

        for rec, pdf in zip(records, pdfs, strict=True):
            rel = first_file.get(str(rec["series_uid"] or ""))
            if rec["assessable"] and rel:
                fig = figures.get(str(rec["series_uid"] or ""))
                paths = write_results(
                    rec, site / rel, pkg, out_dir / "dicom", anomaly_figure=fig, report_pdf=pdf
                )
                rec["dicom"] = [p.name for p in paths]
    for i, (rec, pdf) in enumerate(zip(records, pdfs, strict=True)):
        name = f"study-{first_number + i:03d}"
        uid = str(rec["series_uid"] or "")
        figure_uri = None
        if rec.get("normative") and uid in maps:
            from fedmi.client.anomaly import data_uri, png_bytes

            grid = loaded.grid
            assert grid is not None
            np.save(out_dir / f"{name}-zmap.npy", maps[uid][0])
            rec["normative"]["zmap"] = {
                "file": f"{name}-zmap.npy",
                "grid": {
                    "shape": list(grid.shape),
                    "spacing_mm": list(grid.spacing),
                    "origin_mm": list(grid.origin),
                    "axes": "x, y, z (RAS, MNI)",
                },
                "outside_regions": "NaN",
            }
            if uid in figures:
                figure_uri = data_uri(png_bytes(figures[uid]))
        (out_dir / f"{name}.json").write_text(json.dumps(rec, indent=1) + "\n")
        (out_dir / f"{name}.html").write_text(render_html(rec, pkg, figure_uri))
        (out_dir / f"{name}.pdf").write_bytes(pdf)
    return records


def _normative_html(nv: dict, figure_uri: str | None) -> str:
    """The report's section on the comparison with the federation's normative model."""
    from fedmi.client.anomaly import FIGURE_CAPTION

    e = html.escape
    age = "unknown" if nv["age_years"] is None else f"{nv['age_years']:g} years"
    sex = {"F": "female", "M": "male"}.get(nv["sex"] or "", "unknown")
    out = (
        "<h2>Comparison with the federation's normal aging model</h2>"
        f"<p>Age {e(age)}, sex {e(sex)}. <b>Anomaly score {nv['anomaly_score']:.2f}</b> "
        f"(minus the mean of the {ANOMALY_K} lowest regional z; higher = further below "
        f"normal): <b>{'above' if nv.get('flagged') else 'within'} the normal range</b> "
        f"(95 % of normals score below {nv.get('flag_threshold', float('nan')):.2f}).</p>"
    )
    for note in nv["notes"]:
        out += f"<p><b>Note:</b> {e(note)}.</p>"
    rows = "".join(
        f"<tr><td>{e(r['region'])}</td><td>{r['z']:+.2f}</td></tr>" for r in nv["regions_below"]
    )
    if rows:
        out += (
            f"<p>Regions below z = {nv['threshold']:g}, lowest first:</p>"
            f"<table><tr><th>region</th><th>z</th></tr>{rows}</table>"
        )
    else:
        out += f"<p>No region below z = {nv['threshold']:g}.</p>"
    if figure_uri:
        out += (
            f'<figure><img src="{figure_uri}" alt="regional z-map" style="max-width:100%">'
            f"<figcaption>{e(FIGURE_CAPTION)}</figcaption></figure>"
        )
    m = nv["model"]
    out += (
        f"<p class=small>Normative model: {m['n_sites']} site(s), {m['n_scans']:g} normal scans; "
        f"{'age- and sex-adjusted' if m['adjust_age'] else 'sex-adjusted (not age)'}; "
        f"{'differentially private statistics' if m['dp'] else 'no DP noise'}; "
        + (
            f"with this site's own offset from its {nv['site_normals']} normal scans"
            if nv.get("site_offset")
            else "population model without this site's own offset"
        )
        + ". z-scores show where the scan differs from the federation's normals: not a "
        "diagnosis.</p>"
    )
    return out


def render_html(rec: dict, pkg: ModelPackage, figure_uri: str | None = None) -> str:
    """A one-glance, self-contained per-study report (``figure_uri``: the z-map as a PNG
    data URI, :func:`fedmi.client.anomaly.data_uri`)."""
    e = html.escape
    card = pkg.card
    if rec["assessable"]:
        iv = rec["interval"]
        verdict = (
            f"<p class=big><b>{e(str(rec['class']))}</b> — probability {rec['probability']:.3f} "
            f"(95 % interval {iv['low']:.3f}–{iv['high']:.3f}); operating point "
            f"{rec['threshold']:.3f} ({e(rec['threshold_source'])})</p>"
        )
        if iv["crosses_threshold"]:
            verdict += "<p><b>Uncertain:</b> the interval crosses the operating point.</p>"
        rows = "".join(
            f"<tr><td>{e(r['region'])}</td><td>{r['suvr']:.3f}</td><td>{r['z']:+.2f}</td>"
            f"<td>{r['logit_contribution']:+.3f}</td></tr>"
            for r in rec.get("regions", [])
        )
        if rows:
            verdict += (
                "<h2>Regions driving the result</h2><table><tr><th>region</th><th>ratio to "
                "reference</th><th>standardised</th><th>share of logit</th></tr>"
                f"{rows}</table>"
            )
        if rec.get("qc_flags"):
            verdict += f"<p>Quality flags: {e(', '.join(rec['qc_flags']))}</p>"
        if rec.get("normative"):
            verdict += _normative_html(rec["normative"], figure_uri)
    else:
        verdict = (
            f"<p class=big><b>Not assessable</b> ({e(rec['reason'])})</p><p>{e(rec['message'])}</p>"
        )
        if rec.get("normative"):
            verdict += _normative_html(rec["normative"], figure_uri)
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>fedmi result</title><style>"
        "body{font-family:sans-serif;max-width:50em;margin:2em}.big{font-size:1.4em}"
        ".ruo{border:2px solid #b00;padding:.5em;color:#b00}td,th{padding:.2em .6em}"
        ".small{font-size:.85em;color:#444}</style>"
        f"</head><body><p class=ruo>{e(RESEARCH_USE)}</p>"
        f"<h1>{e(str(card.get('task')))}: {e(str(card.get('description', '')))}</h1>"
        f"{verdict}<p>Model {e(pkg.version)} (device UID {e(pkg.device_uid)})</p>"
        "</body></html>\n"
    )
