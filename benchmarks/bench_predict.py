"""Speed of ``fedmi-site predict``: start-up, and seconds per study end to end.

    python -m benchmarks.bench_predict [--studies 6] [--out /tmp/bench-predict] [--data D]

Generates a tiny fdg-ad federation (phantoms as DICOM; or takes ``--data``, e.g. a
``default``-preset federation with the scanners' full matrices), signs a package of a fresh
regional model with a normative model (so the anomaly map is drawn too), pulls it, then
times ``fedmi-site predict`` (DICOM read → ingest with spatial normalisation → scores →
JSON, HTML, PDF, SR, Secondary Captures and Encapsulated PDF written) on the first
``--studies`` series of the largest site, in a fresh process. Start-up is the time to
import the command and verify the package and load the model. Numbers for comparing
changes, not a test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=6)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--data", type=Path, default=None, help="an existing fdg-ad federation")
    args = ap.parse_args()
    import torch

    from fedmi.client.model import pull
    from fedmi.server.package import PUBLIC_FILE, normative_member, write_model_package
    from fedmi.server.report.document import architecture
    from fedmi.shared.contract import array_record
    from fedmi.shared.model import ModelSpec, build_model, federated_state_dict
    from fedmi.shared.normative import NormativeModel
    from fedmi.simulations.generator import generate_federation

    root = args.out or Path(tempfile.mkdtemp(prefix="bench-predict-"))
    data = args.data or root / "data"
    if not data.exists():
        generate_federation(data, task="fdg-ad", preset="tiny", seed=0)
    sites = [p for p in data.iterdir() if (p / "site.toml").exists()]
    site = max(sorted(sites), key=lambda p: len(list((p / "dicom").iterdir())))
    series = sorted(p for p in (site / "dicom").iterdir() if p.is_dir())[: args.studies]
    studies = root / "studies"
    shutil.rmtree(studies, ignore_errors=True)
    for s in series:
        shutil.copytree(s, studies / s.name)
    torch.manual_seed(0)
    model = build_model(ModelSpec(arch="regional", task="fdg-ad"))
    card = {
        "task": "fdg-ad",
        "tracers": ["fdg"],
        "classes": {"negative": "CN", "positive": "AD"},
        "architecture": architecture(model.spec, model.backbone),
    }
    run = root / "run"
    run.mkdir(parents=True, exist_ok=True)
    names = model.backbone.region_names
    r = len(names)
    normative = NormativeModel(
        region_names=tuple(names),
        centre=np.zeros(r),
        intercept=np.zeros(r),
        slopes=np.zeros((2, r)),
        sigma2=np.full(r, 0.035**2),
        tau2=np.full(r, 0.01**2),
        n_sites=4,
        n_scans=150.0,
    )
    pkg = write_model_package(
        run,
        card,
        array_record(federated_state_dict(model)),
        extra_members=normative_member(normative),
    )
    state = root / "state"
    shutil.rmtree(state, ignore_errors=True)
    pull(pkg, state, run / PUBLIC_FILE)
    out = root / "results"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    startup = subprocess.run(
        [
            sys.executable,
            "-c",
            "import fedmi.client.predict as p, fedmi.client.model as m, "
            f"pathlib; p.load_model(m.load_verified(pathlib.Path({str(pkg)!r}), "
            f"pathlib.Path({str(state)!r})))",
        ],
        check=True,
    )
    t_start = time.perf_counter() - t0
    del startup
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "fedmi.client.cli",
            "predict",
            "--state-dir",
            str(state),
            "--dicom",
            str(studies),
            "--out",
            str(out),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    total = time.perf_counter() - t0
    n = len(list(out.glob("study-*.json")))
    print(
        json.dumps(
            {
                "studies": n,
                "startup_seconds": round(t_start, 2),
                "total_seconds": round(total, 2),
                "seconds_per_study_after_startup": round((total - t_start) / max(n, 1), 2),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
