"""The one-page A4 PDF report: its content, and no text past the page, however long."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

from fedmi.client.report_pdf import PAGE, report_figure, report_lines, report_pdf
from fedmi.client.research_use import RESEARCH_USE

PKG = SimpleNamespace(
    card={"task": "fdg-ad", "description": "FDG PET: Alzheimer's disease vs. normal"},
    version="fdg-ad-20260101T000000Z-0123abcd",
    device_uid="2.25.1234567890",
)


def _normative(n_below: int = 2, flagged: bool = True) -> dict:
    return {
        "age_years": 68,
        "sex": "F",
        "anomaly_score": 3.21,
        "flagged": flagged,
        "flag_threshold": 2.5,
        "threshold": -2.0,
        "notes": ["age unknown: compared with 70-year-olds"],
        "regions_below": [
            {"region": f"Precuneus, very long atlas region name number {i}", "z": -4.5 + i * 0.01}
            for i in range(n_below)
        ],
        "model": {"n_sites": 3, "n_scans": 120.0, "adjust_age": True, "dp": True},
    }


def _assessable(**extra) -> dict:
    rec = {
        "series_uid": "1.2.3",
        "assessable": True,
        "probability": 0.8123,
        "class": "AD",
        "positive": True,
        "threshold": 0.4,
        "threshold_source": "model card",
        "interval": {
            "method": "MC dropout, 20 passes, central 95 %",
            "low": 0.35,
            "high": 0.9,
            "crosses_threshold": True,
        },
        "qc_flags": ["low_counts", "motion"],
        "regions": [
            {"region": f"Region {i}", "suvr": 1.1, "z": -1.5, "logit_contribution": 0.7}
            for i in range(5)
        ],
        "normative": None,
        "research_use": RESEARCH_USE,
    }
    rec.update(extra)
    return rec


LONG = "the series could not be read because " + "x" * 300 + " " + "word " * 900
RECORDS = {
    "assessable": _assessable(),
    "normative": _assessable(normative=_normative()),
    "many-regions": _assessable(normative=_normative(n_below=50)),
    "long-reason": {
        "series_uid": None,
        "assessable": False,
        "reason": "failed_registration",
        "message": LONG,
        "research_use": RESEARCH_USE,
        "normative": _normative(n_below=40),
    },
}
ZMAP = np.full((300, 700, 3), 90, dtype=np.uint8)


def _inside(rec: dict, figure: np.ndarray | None) -> list[str]:
    """Every text drawn, after checking it lies on the page."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = report_figure(rec, PKG, figure)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    page = fig.bbox
    assert tuple(fig.get_size_inches()) == pytest.approx(PAGE)
    texts = []
    for t in fig.texts:
        box = t.get_window_extent(renderer)
        assert box.x0 >= page.x0 and box.x1 <= page.x1 + 0.5, t.get_text()
        assert box.y0 >= page.y0 and box.y1 <= page.y1 + 0.5, t.get_text()
        texts.append(t.get_text())
    for ax in fig.axes:
        box = ax.get_window_extent(renderer)
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0
        assert box.y1 <= page.y1
    # no line overlaps another
    boxes = sorted(
        (t.get_window_extent(renderer) for t in fig.texts if t.get_text()), key=lambda b: -b.y0
    )
    for a, b in zip(boxes, boxes[1:], strict=False):
        assert b.y1 <= a.y0 + 2.0
    return texts


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_the_page_holds_all_its_text(name: str) -> None:
    rec = RECORDS[name]
    texts = _inside(rec, ZMAP if rec.get("normative") else None)
    joined = " ".join(texts)
    assert "Research use only" in joined and PKG.version in joined
    if rec["assessable"]:
        assert "AD" in texts and "0.812" in joined and "model card" in joined
        assert "Uncertain" in joined and "Region 4" in joined and "low_counts" in joined
    else:
        assert "Not assessable (failed_registration)" in joined
        assert "cut" in joined  # the long message ran out of room and says so


def test_the_normative_comparison_and_figure() -> None:
    rec = RECORDS["normative"]
    texts = _inside(rec, ZMAP)
    joined = " ".join(texts)
    assert "Anomaly score 3.21" in joined and "ABOVE the normal range" in joined
    assert "Precuneus, very long atlas region name number 1" in joined and "-4.49" in joined
    fig = report_figure(rec, PKG, ZMAP)
    assert len(fig.axes) == 1 and fig.axes[0].images  # the z-map is drawn
    assert len(report_figure(rec, PKG, None).axes) == 0
    listed = report_lines(RECORDS["many-regions"], PKG)
    assert any("and 40 more" in line.text for line in listed)


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_one_a4_pdf_page(name: str) -> None:
    rec = RECORDS[name]
    pdf = report_pdf(rec, PKG, ZMAP if rec.get("normative") else None)
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf)) == 1
    box = re.search(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)", pdf)
    assert box is not None
    assert float(box[1]) == pytest.approx(PAGE[0] * 72, abs=1) and float(box[2]) == pytest.approx(
        PAGE[1] * 72, abs=1
    )
