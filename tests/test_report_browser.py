"""The reports in a real browser: headless Chromium opens each from a file URL with the network
unreachable; no console error, no request, and the traces and point counts read from the page
after its scripts ran agree with counts computed here from the input files."""

import html
import json
import re

import numpy as np
import pytest

from novelselect import main as novelselect_main
from novelsum import main as novelsum_main
from report import main as report_main
from tests.browser import Browser, chromium_path
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(
    chromium_path() is None,
    reason="Chromium is not installed (apt-get install -y chromium; .ci/run installs it)")

POOL = REPO / "examples" / "pool"
TRACES = ("Array.from(document.querySelectorAll('.plotly-graph-div')).map(d => [d.id, "
          "d._fullData.map(t => [t.name, t.type, t._length])])")


def page_state(path, expression):
    """Errors, outside requests, the traces and the value of ``expression``, in the page."""
    browser = Browser()
    try:
        browser.open(path)
        traces = {div: {name: (kind, length) for name, kind, length in data}
                  for div, data in browser.evaluate(TRACES)}
        value = browser.evaluate(expression)
        return browser.errors(), browser.requests(), traces, value
    finally:
        browser.close()


def pool_texts():
    """Each pool row's text as embedded: a string, or a conversation's turns joined."""
    texts = []
    for shard in sorted(POOL.glob("text/*.json"), key=lambda p: int(p.stem)):
        for item in json.loads(shard.read_text()):
            texts.append(item if isinstance(item, str) else
                         "\n".join(turn["value"] for turn in item))
    return texts


def squeezed(text):
    return re.sub(r"\s+", "", text)


def label_text(label):
    return squeezed(html.unescape(label.replace("<br>", " ")))


def unit_svd_map(vectors):
    unit = vectors.astype(np.float64)
    unit /= np.sqrt((unit ** 2).sum(axis=1))[:, None]
    u, s, _vt = np.linalg.svd(unit - unit.mean(axis=0), full_matrices=False)
    return u[:, :2] * s[:2]


def check_selection_page(path, picks, n, max_points):
    errors, requests, traces, picked = page_state(path, """(() => {
        const t = document.getElementById('map')._fullData.find(t => t.name === 'picks');
        return {x: Array.from(t.x), y: Array.from(t.y), text: t.text}; })()""")
    assert errors == [] and requests == []
    assert traces["map"] == {"not picked": ("scattergl", max_points - len(picks)),
                             "picks": ("scattergl", len(picks))}
    assert traces["curve"]["novelty of the pick"] == ("scatter", len(picks) - 1)
    texts = pool_texts()
    assert len(texts) == n
    for label, pick in zip(picked["text"], picks):
        assert squeezed(texts[pick][:300]) in label_text(label)
    from utils.io.vectors import load_vectors

    expected = unit_svd_map(load_vectors(POOL / "embeddings").vectors)[picks]
    for axis, got in enumerate((picked["x"], picked["y"])):
        sign = np.sign(np.dot(got, expected[:, axis]))
        np.testing.assert_allclose(got, sign * expected[:, axis], atol=1e-5)


@pytest.mark.slow
def test_selection_report_in_chromium_offline(runner, tmp_path):
    result = runner.invoke(novelselect_main, [
        "--text_dir", str(POOL / "text"), "--figure_dir", str(POOL / "embeddings"),
        "--output_dir", str(tmp_path / "out"), "--k", "80", "--quiet",
        "--report", str(tmp_path / "picked.html"), "--report_max_points", "400"])
    assert result.exit_code == 0, result.output
    picks = json.loads(
        (tmp_path / "out" / "novelselect_80_dense_0.5_dist_1.0_indices.json").read_text())
    n = sum(len(json.loads(p.read_text())) for p in POOL.glob("text/*.json"))
    check_selection_page(tmp_path / "picked.html", picks, n, 400)
    # the same report drawn afterwards from the finished folder
    result = runner.invoke(report_main, [str(tmp_path / "out"), "--report",
                                         str(tmp_path / "again.html"), "--quiet",
                                         "--report_max_points", "400"])
    assert result.exit_code == 0, result.output
    check_selection_page(tmp_path / "again.html", picks, n, 400)


@pytest.mark.slow
def test_comparison_report_in_chromium_offline(runner, tmp_path):
    subsets = sorted((REPO / "examples" / "subsets").glob("*.npy"))
    chosen = json.loads((REPO / "examples" / "subsets_indices.json").read_text())
    texts = pool_texts()
    (tmp_path / "texts").mkdir()
    for name, rows in chosen.items():  # each subset's texts, under its name
        (tmp_path / "texts" / f"{name}.json").write_text(json.dumps([texts[i] for i in rows]))
    result = runner.invoke(novelsum_main, [
        "--multi_datasets_dir", str(REPO / "examples" / "subsets"), "--dense_ref_dir",
        str(POOL / "embeddings"), "--output_csv", str(tmp_path / "n.csv"), "--quiet",
        "--report", str(tmp_path / "n.html"), "--report_column",
        "neighbor_5_density_0.25_distance_2", "--report_texts", str(tmp_path / "texts")])
    assert result.exit_code == 0, result.output
    errors, requests, traces, shown = page_state(tmp_path / "n.html", """(() => {
        const map = document.getElementById('datasets_map')._fullData;
        return {title: document.getElementById('spread').layout.title.text,
                labels: Object.fromEntries(map.map(t => [t.name, t.text]))}; })()""")
    assert errors == [] and requests == []
    rows = {p.stem: len(np.load(p)) for p in subsets}
    assert traces["bars"] == {"NovelSum": ("bar", len(subsets))}
    assert traces["spread"] == {name: ("box", count) for name, count in rows.items()}
    assert traces["datasets_map"] == {name: ("scattergl", count) for name, count in rows.items()}
    assert "k=5, beta=0.25, alpha=2" in shown["title"]
    assert set(chosen) == set(rows)
    for name, picked in chosen.items():
        for label, row in zip(shown["labels"][name], picked):
            assert squeezed(texts[row][:300]) in label_text(label)


def test_the_browser_check_sees_errors_and_requests(tmp_path):
    """The check above can fail: a page that logs an error and asks the network is caught."""
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>console.error('broken');"
                    "fetch('https://cdn.plot.ly/plotly.min.js').catch(() => {});"
                    "</script></body></html>")
    errors, requests, traces, _value = page_state(page, "1")
    assert any("broken" in error for error in errors)
    assert requests == ["https://cdn.plot.ly/plotly.min.js"]
    assert traces == {}
