"""Benchmark of site ingest: one 100-slice 128×128 PET series, first ingest vs cached re-ingest.

Run from the repository root (one core, no GPU)::

    OMP_NUM_THREADS=1 python3 benchmarks/bench_ingest.py

Targets: first ingest of the series ≤ 0.2 s (anatomy already loaded: it is loaded once per
process and shared by every series), cached re-ingest ≥ 20× faster. Prints one JSON line.
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

import numpy as np  # noqa: E402

from fedmi.client.ingest.geometry import LPS_TO_RAS  # noqa: E402
from fedmi.client.ingest.pipeline import ingest_site  # noqa: E402
from fedmi.client.ingest.template import template_brain  # noqa: E402
from fedmi.shared.anatomy import region_weights, tissue_on_grid  # noqa: E402
from fedmi.shared.grid import Grid  # noqa: E402
from fedmi.shared.tasks import get_task  # noqa: E402
from fedmi.simulations.dicom import PetMeta, write_pet_series  # noqa: E402

TASK = "fdg-ad"


def brain_pet(shape: tuple[int, int, int], spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """An FDG-like SUV volume (GM 4, WM 1.2, CSF 0.2) on a scanner grid, and its LPS affine."""
    origin = tuple(-(n - 1) * spacing / 2.0 for n in shape)
    grid = Grid(shape, (spacing,) * 3, origin)
    t = tissue_on_grid(grid)
    vol = 4.0 * t["gm"] + 1.2 * t["wm"] + 0.2 * t["csf"]
    flip = np.eye(4)
    flip[0, 0] = flip[1, 1] = -1.0
    flip[0, 3], flip[1, 3] = shape[0] - 1, shape[1] - 1
    return np.ascontiguousarray(vol[::-1, ::-1, :]), LPS_TO_RAS @ grid.affine @ flip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="first-ingest repeats")
    parser.add_argument("--cached-repeats", type=int, default=20)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="fedmi-bench-"))
    try:
        site = work / "site"
        vol, aff = brain_pet((128, 128, 100), 2.0)
        write_pet_series(vol, aff, PetMeta(patient_id="BENCH-1"), site / "dicom" / "pet")
        (site / "labels.csv").write_text("PatientID,label\nBENCH-1,AD\n")

        spec = get_task(TASK)
        t0 = time.perf_counter()
        template_brain(spec.grid)
        region_weights(spec.reference_region, spec.grid)
        warmup = time.perf_counter() - t0

        first = []
        for i in range(args.repeats):
            state = work / f"state{i}"
            t0 = time.perf_counter()
            report = ingest_site(site, TASK, state)
            first.append(time.perf_counter() - t0)
            assert report.summary["series_accepted"] == 1, report.rejected
        cached = []
        for _ in range(args.cached_repeats):
            t0 = time.perf_counter()
            report = ingest_site(site, TASK, work / "state0")
            cached.append(time.perf_counter() - t0)
            assert report.accepted[0]["from_cache"]
        t_first, t_cached = statistics.median(first), statistics.median(cached)
        print(
            json.dumps(
                {
                    "series": "PET 128x128x100 int16, 2 mm",
                    "anatomy_warmup_s": round(warmup, 3),
                    "first_ingest_s": round(t_first, 4),
                    "first_series_per_s": round(1.0 / t_first, 2),
                    "cached_ingest_s": round(t_cached, 5),
                    "cached_series_per_s": round(1.0 / t_cached, 1),
                    "speedup": round(t_first / t_cached, 1),
                    "targets_met": t_first <= 0.2 and t_first / t_cached >= 20,
                }
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
