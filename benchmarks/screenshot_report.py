"""Render a report.html in headless Chromium and save a PNG (a visual check, not a test).

Usage::

    python -m benchmarks.screenshot_report RUN_DIR/report.html --out /tmp/report.png
    python -m benchmarks.screenshot_report --demo --out /tmp/report.png   # synthetic report

Chromium runs with networking, updates and the sandbox off; the page must need nothing
from outside (report.html is self-contained). Install it with ``apt-get install -y chromium``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
)


def find_browser() -> str | None:
    """The first Chromium-family executable on PATH, or ``None``."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html: Path, png: Path, width: int = 1200, height: int = 7000) -> Path:
    """Save a ``width × height`` screenshot of ``html`` to ``png``."""
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium found: apt-get install -y chromium")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            browser,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={png.resolve()}",
            html.resolve().as_uri(),
        ]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    if not png.exists():
        raise RuntimeError("Chromium wrote no screenshot")
    return png


def demo_report(out_dir: Path) -> Path:
    """A synthetic but complete report (3 sites, 5 rounds, LOSO, privacy) written to ``out_dir``."""
    import numpy as np

    from fedmi.client.evaluation.statistics import evaluation_statistics
    from fedmi.server.history import RunHistory, SiteInfo
    from fedmi.server.report.document import build_report, write_report
    from fedmi.server.report.validation import meta_analysis
    from fedmi.shared.run_config import RunConfig

    rng = np.random.default_rng(0)
    history = RunHistory()
    sites = [
        ("site-a", "train", 90, 1.8, "SIEMENS", "Biograph mCT"),
        ("site-b", "train", 60, 1.2, "GE MEDICAL SYSTEMS", "Discovery MI"),
        ("site-c", "train", 8, 1.5, "Philips", "Vereos"),
        ("site-d", "holdout", 80, 1.0, "SIEMENS", "Biograph Vision"),
    ]
    for node, (name, role, n, _, man, model) in enumerate(sites):
        counts = {"tracer": {"fdg": n}, "manufacturer": {man: n}, "model": {model: n}}
        history.sites[node] = SiteInfo(
            node, name, role, "ok", n, n * 2 // 3, n // 3, n // 2, 10, counts
        )
    for r in range(1, 6):
        for node, (_, role, n, sep, *_) in enumerate(sites):
            if role != "train":
                continue
            history.record_train(
                r, node, "ok", {"num-examples": n, "train-loss": 0.7 * 0.85**r, "epsilon": r}
            )
            labels = np.arange(max(n // 3, 8)) % 2
            scores = 1 / (1 + np.exp(-(rng.normal(size=labels.size) + sep * r / 4 * labels)))
            history.record_evaluate(r, node, evaluation_statistics(scores, labels, 10)[0])
    for node, (_, _, n, sep, *_) in enumerate(sites):
        labels = (np.arange(n) % 2)[rng.permutation(n)]
        scores = 1 / (1 + np.exp(-(rng.normal(size=n) * 1.2 + sep * 1.6 * labels - 0.5)))
        history.record_final(node, evaluation_statistics(scores, labels, 10)[0])
    history.missing_final.append(
        {"site_id": "site-e", "role": "holdout", "reason": "no reply before the timeout"}
    )
    report = build_report(RunConfig(num_server_rounds=5), history, {"total_seconds": 1.0})
    report["privacy"] = {
        "level": "sample (DP-SGD at each site)",
        "per_site": [{"site_id": "site-a", "dp": "on", "epsilon": 5.0, "epsilon_budget": 8.0}],
    }
    rows = [r for r in report["final"]["per_site"] if r.get("auc") is not None][:3]
    report["loso"] = {
        "folds": [{"left_out": r["site_id"], "status": "ok", "result": r} for r in rows],
        "summary": {
            "folds_with_auc": len(rows),
            "mean_auc": float(np.mean([r["auc"] for r in rows])),
            "min_auc": min(r["auc"] for r in rows),
            "max_auc": max(r["auc"] for r in rows),
            "meta_analysis": meta_analysis(rows),
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_report(out_dir, report)
    return out_dir / "report.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", nargs="?", help="report.html to render")
    parser.add_argument("--demo", action="store_true", help="render a synthetic demo report")
    parser.add_argument("--out", default="report.png", help="PNG to write")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=7000)
    args = parser.parse_args(argv)
    if args.demo:
        html = demo_report(Path(tempfile.mkdtemp(prefix="fedmi-report-")))
    elif args.html:
        html = Path(args.html)
    else:
        parser.error("give a report.html or --demo")
    try:
        png = screenshot(html, Path(args.out), args.width, args.height)
    except (FileNotFoundError, RuntimeError, subprocess.SubprocessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{html} -> {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
