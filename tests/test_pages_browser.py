"""A real browser looks at the pages: report.html and status.html rendered by headless Chromium.

The test builds both pages from a results store (records with curves and saved renders), opens each in
Debian's Chromium, counts broken images through the DOM, and checks the screenshot shows figures (many
colours), not an empty page. `.ci/run` installs Chromium; outside CI the test skips without it.
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reflect.ablation.plan import plan_trials
from reflect.ablation.spec import load_ablation
from reflect.ablation.store import ResultsStore, TrialRecord
from reflect.reports.ablation import write_ablation_report
from reflect.status import refresh_status

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("CI"):
    raise RuntimeError("CI must install Debian's chromium (see .ci/run)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")

ABLATION = """
name: pages
phase: 2
question: Do the pages show their figures?
citations: [a, b]
base: quick
arms:
  concat: {model.decoder.expr_conditioning: concat}
  film: {model.decoder.expr_conditioning: film}
baseline: concat
seeds: {min: 3, max: 5}
metric: {name: val/psnr, mode: max, window: 3}
expected: {gain_db: 0.5, source: test}
"""
PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-broken', imgs.filter(i => !i.complete || i.naturalWidth === 0).length);
});</script>"""


def chromium(args, timeout=90):
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=timeout)


def build_store(tmp_path):
    path = tmp_path / "pages.yaml"
    path.write_text(ABLATION)
    ablation = load_ablation(path)
    store = ResultsStore(tmp_path / "runs" / "pages")
    rng = np.random.default_rng(0)
    for p in plan_trials(ablation, seeds=[0, 1, 2]):
        level = 28.0 + (1.0 if p.arm == "film" else 0.0) + 0.05 * rng.standard_normal()
        renders = []
        for i in range(2):
            image = rng.random((32, 64, 3)) * 0.2 + np.linspace(0, 0.8, 64)[None, :, None]
            file = tmp_path / "renders" / f"{p.key}-{i}.png"
            file.parent.mkdir(exist_ok=True)
            Image.fromarray((image * 255).astype("uint8")).save(file)
            renders.append({"frame_id": f"synthetic/t0000{i}/c2", "path": str(file)})
        # per-evaluation noise: the windowed number depends on which evaluations the window takes
        history = [{"step": 50 * k, "val/psnr": level - 3.0 / k + 0.05 * rng.standard_normal()} for k in range(1, 13)]
        store.write(TrialRecord(study="pages", arm=p.arm, seed=p.seed, config_hash=p.config_hash, status="complete",
                                config={"profile": "quick", "data": {"root": None}}, eval_history=history,
                                windowed_metric=None, metric_name="val/psnr", metric_window=3, renders=renders,
                                protocol={"dataset_fingerprint": "synthetic"}, wall_time_s=40.0))
    return ablation, store


@pytest.mark.parametrize("page", ["report", "status"])
def test_pages_render_their_figures_in_chromium(tmp_path, page):
    ablation, store = build_store(tmp_path)
    write_ablation_report(ablation, store, tmp_path / "reports")
    refresh_status([str(tmp_path / "runs")], str(tmp_path / "reports"))
    html_path = tmp_path / "reports" / ("pages/report.html" if page == "report" else "status.html")
    probed = html_path.with_name(f"probed-{html_path.name}")
    probed.write_text(html_path.read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium(["--virtual-time-budget=5000", "--dump-dom", probed.as_uri()]).stdout
    images = int(re.search(r'data-images="(\d+)"', dom).group(1))
    broken = int(re.search(r'data-broken="(\d+)"', dom).group(1))
    expected = 5 if page == "report" else 1  # forest, paired, curves, looks, image grid | the ladder
    assert images == expected and broken == 0
    shot = tmp_path / f"{page}.png"
    chromium(["--window-size=1200,2200", f"--screenshot={shot}", html_path.as_uri()])
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours > 500, f"{colours} colours: the screenshot shows no figures"
    if page == "report":  # a number on the page is the store's, computed here from the records, not the report
        window = ablation.metric.window
        per_trial = {}  # (arm, seed) -> mean of the trial's last `window` val/psnr evaluations
        for r in store.records():
            psnr = [h["val/psnr"] for h in r.eval_history]
            per_trial[(r.arm, r.seed)] = sum(psnr[-window:]) / window
        seeds = sorted({seed for _, seed in per_trial})
        assert window == 3 and seeds == [0, 1, 2] and len(per_trial) == 6
        delta = sum(per_trial[("film", s)] - per_trial[("concat", s)] for s in seeds) / len(seeds)
        assert 0.8 < delta < 1.2  # the +1 dB level build_store gives film, up to the noise
        assert f"{delta:+.3f}" in html_path.read_text()  # ablation_html prints Δ with number(x, 3, signed=True)
    if os.environ.get("REFLECT_SCREENSHOTS"):  # keep the screenshots for a person to look at
        shutil.copy(shot, Path(os.environ["REFLECT_SCREENSHOTS"]) / shot.name)
