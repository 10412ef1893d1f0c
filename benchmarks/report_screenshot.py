"""The picture of docs/reading-results.md: the README's selection with --report, opened in
headless Chromium (offline, as the tests open it) and photographed.

    python benchmarks/report_screenshot.py      # writes docs/images/report_selection.png
"""

import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.browser import Browser  # noqa: E402 (the repository root is on the path first)


def main():
    work = Path(tempfile.mkdtemp(prefix="report_screenshot_"))
    report = work / "picked.html"
    subprocess.run([sys.executable, "novelselect.py", "--text_dir", "examples/pool/text",
                    "--figure_dir", "examples/pool/embeddings", "--output_dir",
                    str(work / "picked"), "--k", "80", "--quiet", "--report", str(report)],
                   check=True, cwd=REPO)
    browser = Browser(width=1300, height=900)
    try:
        browser.open(report)
        # the pointer over the 8th pick, so that its hover label shows
        x, y = browser.evaluate("""(() => {
            const map = document.getElementById('map');
            map.scrollIntoView();
            const trace = map._fullData.find(t => t.name === 'picks');
            const layout = map._fullLayout, box = map.getBoundingClientRect();
            return [box.left + layout.margin.l + layout.xaxis.l2p(trace.x[7]),
                    box.top + layout.margin.t + layout.yaxis.l2p(trace.y[7])]; })()""")
        browser.call("Input.dispatchMouseEvent", session=True, type="mouseMoved", x=x, y=y)
        browser.evaluate("new Promise(done => setTimeout(done, 1000))")
        errors, requests = browser.errors(), browser.requests()
        if errors or requests:
            raise SystemExit(f"the page reported {errors} and asked for {requests}")
        target = REPO / "docs" / "images" / "report_selection.png"
        browser.screenshot(target)
    finally:
        browser.close()
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
