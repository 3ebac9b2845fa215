"""The label-efficiency copy of a federation keeps N labels per training site, stratified,
and never writes into the source federation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from benchmarks.bench_pretrain import reduce_labels


def _labels(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _federation(root: Path) -> None:
    sites = [("site-a", "train", 20, 10), ("site-b", "train", 6, 14), ("site-c", "holdout", 9, 9)]
    manifest = {"sites": [{"site_id": s, "role": r} for s, r, _, _ in sites]}
    root.mkdir()
    (root / "federation.json").write_text(json.dumps(manifest))
    for site, _, n_ad, n_cn in sites:
        (root / site / "dicom").mkdir(parents=True)
        (root / site / "dicom" / "scan.dcm").write_bytes(b"DICM")
        rows = [{"PatientID": f"{site}-{i}", "label": "AD"} for i in range(n_ad)]
        rows += [{"PatientID": f"{site}-{n_ad + i}", "label": "CN"} for i in range(n_cn)]
        with (root / site / "labels.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["PatientID", "label"])
            w.writeheader()
            w.writerows(rows)


def test_reduce_labels(tmp_path: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _federation(src)
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    reduce_labels(src, dst, 10, seed=0)
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before  # untouched
    a, b = _labels(dst / "site-a" / "labels.csv"), _labels(dst / "site-b" / "labels.csv")
    assert len(a) == 10 and sum(r["label"] == "AD" for r in a) == 7  # 20:10 → 7:3
    assert len(b) == 10 and sum(r["label"] == "AD" for r in b) == 3  # 6:14 → 3:7
    assert len(_labels(dst / "site-c" / "labels.csv")) == 18  # holdouts keep every label
    assert (dst / "site-a" / "dicom" / "scan.dcm").stat().st_ino == (
        src / "site-a" / "dicom" / "scan.dcm"
    ).stat().st_ino  # DICOM hard-linked, not copied
    reduce_labels(src, dst, 10, seed=0)  # again: same choice
    assert _labels(dst / "site-a" / "labels.csv") == a
