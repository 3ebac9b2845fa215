"""Benchmarks of spatial normalisation: ingest time, and regional SUVR error against the truth.

Run from the repository root (one core per process, no GPU)::

    # time per scan: one posed 128×128×100 PET series, translation (earlier versions) vs
    # affine (default) [vs affine+bspline], first and cached ingest, ratios in one run
    OMP_NUM_THREADS=1 python3 benchmarks/bench_registration.py timing [--bspline]

    # regional SUVR error of every scan of generated federations against the generator's
    # truth, per spatial normalisation method
    fedmi-sim generate --out D/real --preset default --poses realistic --subjects-scale 0.25
    fedmi-sim generate --out D/aligned --preset default --poses aligned --subjects-scale 0.25
    python3 benchmarks/bench_registration.py suvr --data D/real D/aligned --out D/bench

The truth of a scan is what a perfect normalisation of a noiseless scan would measure: the
subject's template-space activity (its basis coefficients, the site's PSF, the cortical
loss of atrophy, but not the atrophy's warp nor the head pose), anti-aliased to 4 mm and
sampled on the task grid like ingest does, divided by its reference-region mean. The error
of a region is ``100 × (measured / truth − 1)`` in % for each of the regional model's
composites (:func:`fedmi.shared.anatomy.composite_index`) and the cortical composite; the
tables give the median and 95th percentile of its absolute value over scans and regions.
Prints JSON; ``suvr`` also writes ``OUT/suvr.json`` and ``OUT/suvr.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from fedmi.client.ingest.pipeline import ingest_site  # noqa: E402
from fedmi.client.ingest.registration import RegistrationSettings  # noqa: E402
from fedmi.client.ingest.report import load_accepted  # noqa: E402
from fedmi.client.ingest.template import antialias  # noqa: E402
from fedmi.shared.anatomy import composite_index, region_weights  # noqa: E402
from fedmi.shared.grid import resample_to_grid  # noqa: E402
from fedmi.shared.tasks import get_task  # noqa: E402
from fedmi.shared.templates import task_template  # noqa: E402
from fedmi.simulations import phantom  # noqa: E402
from fedmi.simulations.dicom import PetMeta, write_pet_series  # noqa: E402
from fedmi.simulations.identities import site_identifiers  # noqa: E402
from fedmi.simulations.phantom.atrophy import cortical_factor  # noqa: E402
from fedmi.simulations.sites import PRESETS, make_sites  # noqa: E402
from fedmi.simulations.subjects import draw_truth, subject_rng  # noqa: E402

MIN_REGION_VOXELS = 4


def _posed_series(site: Path) -> None:
    """One FDG subject tilted (15°, −10°, 8°) and scaled (1.08, 0.94, 1.03), 2 mm voxels."""
    rng = np.random.default_rng(0)
    t = phantom.draw_subject("fdg-ad", rng, group_probs={"CN": 1.0})
    t.rotation_deg, t.scale = (15.0, -10.0, 8.0), (1.08, 0.94, 1.03)
    shape = (128, 128, 100)
    aff = phantom.scanner_affine(shape, (2.0, 2.0, 2.0))
    vol = phantom.add_pet_noise(phantom.subject_volume(t, shape, aff, fwhm_mm=6.0), 0.08, rng)
    write_pet_series(vol, aff, PetMeta(patient_id="BENCH-1"), site / "dicom" / "pet")
    (site / "labels.csv").write_text("PatientID,label\nBENCH-1,CN\n")


def timing(repeats: int, bspline: bool) -> dict:
    """Median first and cached ingest time per method, and the ratios to translation."""
    work = Path(tempfile.mkdtemp(prefix="fedmi-bench-reg-"))
    methods = ["translation", "affine"] + (["affine+bspline"] if bspline else [])
    try:
        site = work / "site"
        _posed_series(site)
        spec = get_task("fdg-ad")
        task_template(spec), task_template(spec, spec.grid), region_weights("pons", spec.grid)
        out: dict = {"series": "PET 128x128x100, 2 mm, tilted and scaled", "methods": {}}
        for m in methods:
            settings = RegistrationSettings(method=m)
            first, cached = [], []
            for i in range(repeats):
                state = work / f"{m}-{i}"
                t0 = time.perf_counter()
                report = ingest_site(site, "fdg-ad", state, registration=settings)
                first.append(time.perf_counter() - t0)
                assert report.summary["series_accepted"] == 1, report.rejected
                t0 = time.perf_counter()
                report = ingest_site(site, "fdg-ad", state, registration=settings)
                cached.append(time.perf_counter() - t0)
                assert report.accepted[0]["from_cache"]
            out["methods"][m] = {
                "first_ingest_s": round(statistics.median(first), 4),
                "cached_ingest_s": round(statistics.median(cached), 5),
            }
        base = out["methods"]["translation"]
        for m in methods:
            row = out["methods"][m]
            row["first_vs_translation"] = round(row["first_ingest_s"] / base["first_ingest_s"], 2)
            row["cached_vs_translation"] = round(
                row["cached_ingest_s"] / base["cached_ingest_s"], 2
            )
        out["target_met"] = out["methods"]["affine"]["first_vs_translation"] <= 3.0
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _region_means(vol: np.ndarray, spec) -> np.ndarray:
    """Composite means (regional model regions) and the cortical composite, one vector."""
    index, names = composite_index(spec.grid, MIN_REGION_VOXELS)
    flat = vol.reshape(-1)
    inside = index >= 0
    sums = np.bincount(index[inside], weights=flat[inside], minlength=len(names))
    counts = np.bincount(index[inside], minlength=len(names))
    w = region_weights("cortex_composite", spec.grid)
    return np.append(sums / counts, float(np.sum(w * vol) / np.sum(w)))


def _truth_ratios(root: Path, manifest: dict) -> dict[str, np.ndarray]:
    """PatientID → true regional ratios (see the module docstring)."""
    task, seed = manifest["task"], manifest["seed"]
    spec = get_task(task)
    opts = manifest["options"]
    sites = make_sites(
        task, manifest["preset"], seed, opts["n_sites"], opts["subjects_scale"], opts["poses"]
    )
    grid = PRESETS[manifest["preset"]].working_grid
    base = phantom.build_basis(task, grid)
    w_ref = region_weights(spec.reference_region, spec.grid)
    out = {}
    for site in sites:
        basis = base.blurred(site.fwhm_mm)
        ids, _, _ = site_identifiers(site, seed)
        for j in range(site.n_subjects):
            truth = draw_truth(site, seed, task, subject_rng(seed, site.index, j), j)
            coefs = phantom.subject_coefficients(truth, basis)
            if not site.is_pet:
                for name in phantom.DAT_SUBREGIONS:
                    coefs[basis.index(name)] *= site.sbr_recovery
            vol = basis.combine(coefs) * cortical_factor(grid, truth.atrophy)
            vol = resample_to_grid(antialias(vol, grid.affine, 4.0), grid.affine, spec.grid)
            vol /= float(np.sum(w_ref * vol) / np.sum(w_ref))
            out[ids[j]] = _region_means(vol, spec)
    return out


def _errors(root: Path, state: Path, method: str, truth: dict, manifest: dict) -> np.ndarray:
    """Ingest every site with ``method``; errors (%) per scan × region."""
    spec = get_task(manifest["task"])
    rows = []
    for s in manifest["sites"]:
        site_state = state / method / s["site_id"]
        ingest_site(
            root / s["site_id"],
            spec.name,
            site_state,
            workers=2,
            registration=RegistrationSettings(method=method),
        )
        for row in load_accepted(site_state):
            vol = np.asarray(nib.load(row["cached_path"]).dataobj, dtype=np.float32)
            rows.append(100.0 * (_region_means(vol, spec) / truth[row["patient_id"]] - 1.0))
    return np.asarray(rows)


def _summary(err: np.ndarray) -> dict:
    a = np.abs(err)
    return {
        "scans": int(a.shape[0]),
        "regions_median": round(float(np.median(a[:, :-1])), 2),
        "regions_p95": round(float(np.percentile(a[:, :-1], 95)), 2),
        "composite_median": round(float(np.median(a[:, -1])), 2),
        "composite_p95": round(float(np.percentile(a[:, -1], 95)), 2),
    }


def suvr(data: list[Path], out: Path, methods: list[str]) -> dict:
    """Errors of every method on every federation; writes ``out/suvr.{json,md}``."""
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    per_region: dict = {}
    for root in data:
        manifest = json.loads((root / "federation.json").read_text())
        truth = _truth_ratios(root, manifest)
        poses = manifest["options"]["poses"]
        for m in methods:
            t0 = time.perf_counter()
            err = _errors(root, out / "state" / poses, m, truth, manifest)
            result[f"{poses}/{m}"] = {**_summary(err), "seconds": round(time.perf_counter() - t0)}
            per_region[f"{poses}/{m}"] = np.percentile(np.abs(err), [50, 95], axis=0).round(2)
            print(json.dumps({f"{poses}/{m}": result[f"{poses}/{m}"]}), flush=True)
    spec = get_task(json.loads((data[0] / "federation.json").read_text())["task"])
    names = [*composite_index(spec.grid, MIN_REGION_VOXELS)[1], "cortex_composite"]
    (out / "suvr.json").write_text(
        json.dumps(
            {
                "summary": result,
                "regions": names,
                "per_region": {k: v.tolist() for k, v in per_region.items()},
            },
            indent=1,
        )
    )
    lines = ["| region | " + " | ".join(f"{k} median / p95" for k in per_region) + " |"]
    lines.append("|---|" + "---|" * len(per_region))
    for i, n in enumerate(names):
        cells = [f"{v[0, i]:.2f} / {v[1, i]:.2f}" for v in per_region.values()]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    (out / "suvr.md").write_text("\n".join(lines) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("timing", help="ingest time per scan, per method")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--bspline", action="store_true", help="also time affine+bspline")
    p = sub.add_parser("suvr", help="regional SUVR error against the generator's truth")
    p.add_argument("--data", type=Path, nargs="+", required=True, help="generated federations")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--methods", default="translation,affine")
    args = parser.parse_args(argv)
    if args.cmd == "timing":
        print(json.dumps(timing(args.repeats, args.bspline)))
    else:
        print(json.dumps(suvr(args.data, args.out, args.methods.split(","))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
