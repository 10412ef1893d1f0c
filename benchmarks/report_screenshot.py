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
        # the hover label of the 8th pick, as a pointer over it would show it
        browser.evaluate("""(() => {
            const map = document.getElementById('map');
            const trace = map._fullData.findIndex(t => t.name === 'picks');
            Plotly.Fx.hover(map, [{curveNumber: trace, pointNumber: 7}]);
            return true; })()""")
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
