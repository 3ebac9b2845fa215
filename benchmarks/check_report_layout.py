"""Check in headless Chromium that nothing in a report.html overflows the page width.

Usage::

    python -m benchmarks.check_report_layout RUN_DIR/report.html            # 1280 and 390 px
    python -m benchmarks.check_report_layout --demo --widths 1280,390

A copy of the page, laid out in an iframe of the given width, gets a small script that lists
every element whose right edge passes that width, or whose content spills out of it (elements inside a horizontally scrolling container, which
the reader scrolls, excepted) and whether the page itself scrolls sideways; Chromium
(``--dump-dom``) prints the result. Exit status 1 when anything overflows. The report itself
stays script-free: the probe is added to a temporary copy only.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.screenshot_report import FLAGS, demo_report, find_browser

WIDTHS = (1280, 390)

_PROBE = """<script>
window.addEventListener("load", () => {
  const vw = document.documentElement.clientWidth;
  const scrolls = (el) => {
    for (let p = el.parentElement; p; p = p.parentElement) {
      const o = getComputedStyle(p).overflowX;
      if (o === "auto" || o === "scroll" || o === "hidden") return true;
    }
    return false;
  };
  const bad = [];
  for (const el of document.body.querySelectorAll("*")) {
    if (el.closest("svg") && el.tagName.toLowerCase() !== "svg") continue;
    if (scrolls(el)) continue;
    const r = el.getBoundingClientRect();
    // past the viewport, or its own content (a long word) past its box
    const spills = getComputedStyle(el).overflowX === "visible"
      && el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1;
    if (r.width === 0 || (r.right <= vw + 1 && !spills)) continue;
    const id = el.id ? "#" + el.id : "";
    const cls = el.className && typeof el.className === "string" ? "." + el.className : "";
    bad.push(`${el.tagName.toLowerCase()}${id}${cls} right=${Math.round(r.right)} ` +
      `content=${el.scrollWidth}/${el.clientWidth}: ${el.textContent.slice(0, 60)}`);
  }
  parent.postMessage(JSON.stringify({
    viewport: vw, page: document.documentElement.scrollWidth, overflowing: bad.slice(0, 50),
  }), "*");
});
</script>"""

#: the page is laid out in an iframe of the wanted width (Chromium's windows are at least
#: 500 px wide), which posts its result to this page
_HARNESS = """<!DOCTYPE html><html><body style="margin:0">
<iframe src="probe.html" style="width:{width}px;height:{height}px;border:0"></iframe>
<script>
window.addEventListener("message", (e) => {{
  const out = document.createElement("pre");
  out.id = "layout-probe";
  out.textContent = e.data;
  document.body.appendChild(out);
}});
</script></body></html>"""


def probe(html: Path, width: int, height: int = 900) -> dict:
    """``{"viewport", "page", "overflowing": [...]}`` of ``html`` laid out ``width`` px wide."""
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium found: apt-get install -y chromium")
    text = html.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "probe.html").write_text(text, encoding="utf-8")
        harness = Path(tmp) / "harness.html"
        harness.write_text(_HARNESS.format(width=width, height=height), encoding="utf-8")
        cmd = [
            browser,
            *FLAGS,
            f"--user-data-dir={Path(tmp) / 'profile'}",
            f"--window-size={max(width, 800) + 40},{height + 40}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            harness.as_uri(),
        ]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="layout-probe">(.*?)</pre>', done.stdout, re.S)
    if not found:
        raise RuntimeError("the layout probe did not run (no result in Chromium's DOM)")
    import html as html_lib

    return json.loads(html_lib.unescape(found.group(1)))


def problems(result: dict) -> list[str]:
    """What overflows in one :func:`probe` result (empty: nothing)."""
    out = list(result["overflowing"])
    if result["page"] > result["viewport"] + 1:
        out.insert(0, f"page scrolls sideways: {result['page']} px in {result['viewport']} px")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", nargs="?", help="report.html to check")
    parser.add_argument("--demo", action="store_true", help="check a synthetic demo report")
    parser.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    args = parser.parse_args(argv)
    if args.demo:
        html = demo_report(Path(tempfile.mkdtemp(prefix="fedmi-report-")))
    elif args.html:
        html = Path(args.html)
    else:
        parser.error("give a report.html or --demo")
    failed = False
    for width in (int(w) for w in args.widths.split(",")):
        try:
            found = problems(probe(html, width))
        except (FileNotFoundError, RuntimeError, subprocess.SubprocessError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"{width} px: {'nothing overflows' if not found else f'{len(found)} overflow(s)'}")
        for item in found:
            print(f"  {item}")
        failed |= bool(found)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
