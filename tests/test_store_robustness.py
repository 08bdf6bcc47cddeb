"""Damaged files and kills mid-write: finished work is never lost, a report never crashes, the file is named.

One tiny ablation (two arms, one seed, 4 steps) is trained once for the module; every test that needs trained
trials works on its own copy of that store.
"""
import io
import json
import os
import re
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from reflect.ablation.runner import RunOptions, run_ablation, store_for
from reflect.ablation.store import COMPLETE, RUNNING, ResultsStore, TrialRecord
from reflect.reports.ablation import write_ablation_report
from reflect.reports.figures import image_grid, report_figures
from reflect.training import save_renders, to_uint8_image

from conftest import TINY
from test_ablation_run import ABLATION as ABLATION_TEMPLATE, FILM

NAME = "robust_abl"
ABLATION = ABLATION_TEMPLATE.format(name=NAME, second=FILM).replace("seeds: 2", "seeds: 1")
OVERRIDES = (*TINY, "trainer.max_steps=4")
FRAMES = 3  # trainer.sample_images: the renders each trial keeps


class Killed(BaseException):
    """A kill at that instant (no handler of the code under test catches it, as none survives SIGKILL)."""


def kill_at_replace(monkeypatch, name: str) -> None:
    """``os.replace`` onto a file called ``name`` dies instead (any other replace goes through)."""
    real = os.replace

    def replace(src, dst, *a, **k):
        if Path(dst).name == name:
            raise Killed(f"killed before {dst} was replaced")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny ablation: its root holds the ablation file and ``runs/``."""
    root = tmp_path_factory.mktemp("trained")
    (root / f"{NAME}.yaml").write_text(ABLATION)
    opts = RunOptions(path=str(root / f"{NAME}.yaml"), overrides=OVERRIDES, runs_dir=str(root / "runs"))
    store = store_for(run_ablation(opts), opts.runs_dir)
    records = list(store.records())
    assert len(records) == 2 and all(r.status == COMPLETE and len(r.renders) == FRAMES for r in records)
    return root


def copy_of(trained: Path, dst: Path):
    """A copy of the trained ablation under ``dst`` (paths in its JSON files moved too): (options, store)."""
    shutil.copytree(trained, dst, dirs_exist_ok=True)
    for path in (dst / "runs").rglob("*.json"):
        path.write_text(path.read_text().replace(str(trained), str(dst)))
    opts = RunOptions(path=str(dst / f"{NAME}.yaml"), overrides=OVERRIDES, runs_dir=str(dst / "runs"))
    return opts, store_for(opts.load(), opts.runs_dir)


def record_of(store: ResultsStore, arm: str) -> TrialRecord:
    return next(r for r in store.records() if r.arm == arm)


# --- 1. the render index -------------------------------------------------------------------------------------


def test_a_render_index_cut_short_by_a_kill_leaves_the_finished_trial_complete(trained, tmp_path):
    """The kill came after the final checkpoint, in the index write: the record still says running. The rerun
    resumes the finished checkpoint (no evaluation, so no renders to write) and must record the trial complete,
    its renders missing, instead of FAILED: JSONDecodeError (which --retry-failed would repeat forever)."""
    opts, store = copy_of(trained, tmp_path)
    before = record_of(store, "film")
    index = store.workdir(before.key) / "renders" / "index.json"
    text = index.read_text()
    index.write_text(text[: len(text) // 2])
    killed = TrialRecord(**{**asdict(before), "status": RUNNING, "pid": os.getpid()})  # its process is gone
    store.write(killed)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_ablation(opts)
    after = store.get(before.key)
    assert (after.status, after.failure_reason) == (COMPLETE, None)  # was: failed, "JSONDecodeError: ..."
    assert after.renders == []
    assert any(str(index) in str(w.message) and "invalid JSON" in str(w.message) for w in caught)
    assert after.eval_history == before.eval_history and after.steps == 4  # the finished run, not retrained
    assert len(record_of(store, "concat").renders) == FRAMES  # the other trial keeps its renders

    # the report is written and says which trial has no renders (instead of crashing or drawing nothing silently)
    with pytest.warns(UserWarning, match=re.escape(f"`{before.key}`: no renders recorded")):
        write_ablation_report(opts.load(), store, tmp_path / "reports")
    report = (tmp_path / "reports" / NAME / "report.md").read_text()
    assert f"`{before.key}`: no renders recorded" in report
    assert f"`{before.key}`: no renders recorded" in (tmp_path / "reports" / NAME / "report.html").read_text()


def fake_module(n: int, seed: int = 0) -> SimpleNamespace:
    gen = torch.Generator().manual_seed(seed)
    return SimpleNamespace(sample_images=[(f"synthetic/t{i:05d}/c2", torch.rand(3, 8, 16, generator=gen))
                                          for i in range(n)])


@pytest.mark.parametrize("content, why", [
    ("half", "invalid JSON"),
    ('{"frame_id": "a", "path": "00.png"}', "expected a list"),
    ("[1, 2]", "entry 0 is not"),
    ('[{"frame_id": "a"}]', "entry 0 is not"),
    (b"\xff\xfe[]", "invalid"),
])
def test_an_unreadable_render_index_means_the_renders_are_missing(tmp_path, content, why):
    first = save_renders(tmp_path, fake_module(2))
    index = tmp_path / "renders" / "index.json"
    assert json.loads(index.read_text()) == first and len(first) == 2
    if content == "half":
        content = index.read_text()[: len(index.read_text()) // 2]
    (index.write_bytes if isinstance(content, bytes) else index.write_text)(content)
    with pytest.warns(UserWarning, match=re.escape(str(index)) + ".*" + why):
        assert save_renders(tmp_path, fake_module(0)) == []


def test_a_valid_render_index_is_read_back_and_the_pngs_hold_the_renders(tmp_path):
    module = fake_module(2)
    written = save_renders(tmp_path, module)
    assert written == [{"frame_id": f"synthetic/t{i:05d}/c2", "path": str(tmp_path / "renders" / f"{i:02d}.png")}
                       for i in range(2)]
    assert save_renders(tmp_path, fake_module(0)) == written  # a rerun that did not evaluate again
    for (_, image), entry in zip(module.sample_images, written):
        assert np.array_equal(np.asarray(Image.open(entry["path"])), to_uint8_image(image))


@pytest.mark.parametrize("victim", ["00.png", "index.json"])
def test_a_kill_while_renders_are_written_keeps_the_previous_files_whole(tmp_path, monkeypatch, victim):
    save_renders(tmp_path, fake_module(2, seed=0))
    out = tmp_path / "renders"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    kill_at_replace(monkeypatch, victim)
    with pytest.raises(Killed):
        save_renders(tmp_path, fake_module(2, seed=1))
    assert sorted(p.name for p in out.iterdir()) == ["00.png", "01.png", "index.json"]  # no temp file left
    assert (out / victim).read_bytes() == before[victim]
    monkeypatch.undo()
    assert save_renders(tmp_path, fake_module(0)) == json.loads(before["index.json"])


# --- 2. malformed trial records ------------------------------------------------------------------------------


def good_record(**kw) -> TrialRecord:
    return TrialRecord(**{"study": "s", "arm": "film", "seed": 0, "config_hash": "abc", "status": COMPLETE,
                          "eval_history": [{"step": 4, "val/psnr": 20.0}], **kw})


@pytest.mark.parametrize("content, problem", [
    ("[]", "expected a JSON object, got list"),
    ('"film"', "expected a JSON object, got str"),
    ('{"arm": "film"}', "missing field(s) study, seed, config_hash, status"),
    ("seed-as-text", "seed should be int, got str"),
    ("history-as-number", "eval_history should be list, got int"),
    ("seed-as-bool", "seed should be int, got bool"),
    ("half", "invalid JSON"),
])
def test_a_malformed_record_is_skipped_with_a_warning_naming_the_file(tmp_path, content, problem):
    store = ResultsStore(tmp_path / "study")
    good = good_record()
    store.write(good)
    valid = asdict(good_record(seed=1))
    content = {"seed-as-text": json.dumps({**valid, "seed": "zero"}),
               "history-as-number": json.dumps({**valid, "eval_history": 3}),
               "seed-as-bool": json.dumps({**valid, "seed": True}),
               "half": json.dumps(valid)[:100]}.get(content, content)
    bad = store.trials_dir / "x.json"
    bad.write_text(content)

    with pytest.warns(UserWarning, match=re.escape(f"{bad}: skipped, not a readable trial record: {problem}")):
        records = list(store.records())
    assert [r.key for r in records] == [good.key] and records[0].eval_history == good.eval_history
    with pytest.warns(UserWarning, match=re.escape(str(bad))):
        assert store.get("x") is None  # "not done": the runner trains it and its write replaces the file


def test_fields_from_a_newer_version_are_ignored_with_a_warning(tmp_path):
    store = ResultsStore(tmp_path / "study")
    rec = good_record()
    store.write(rec)
    path = store.record_path(rec.key)
    path.write_text(json.dumps({**json.loads(path.read_text()), "gpu_hours": 1.5, "zeta": None}))
    with pytest.warns(UserWarning, match=re.escape(f"{path}: ignoring unknown field(s) gpu_hours, zeta")):
        got = store.get(rec.key)
    assert asdict(got) == asdict(rec)


def test_a_malformed_record_in_any_trials_folder_does_not_stop_the_report(trained, tmp_path, capsys):
    """``reflect.report`` reads this study's store and every sibling study's (the prior spread)."""
    from reflect.report import main

    opts, store = copy_of(trained, tmp_path)
    mine, sibling = store.trials_dir / "x.json", tmp_path / "runs" / "other" / "trials" / "y.json"
    mine.write_text("[]")
    sibling.parent.mkdir(parents=True)
    sibling.write_text('{"arm": "film"}')
    with pytest.warns(UserWarning) as caught:
        rc = main([opts.path, *OVERRIDES, "--runs-dir", opts.runs_dir, "--reports-dir", str(tmp_path / "reports"),
                   "--roadmap", str(tmp_path / "no-roadmap.yaml")])
    assert rc == 0  # scored (inconclusive on one seed), as the intact store is
    messages = {str(w.message) for w in caught}
    assert f"{mine}: skipped, not a readable trial record: expected a JSON object, got list" in messages
    assert any(m.startswith(f"{sibling}: skipped, not a readable trial record: missing field(s)") for m in messages)
    summary = json.loads((tmp_path / "reports" / NAME / "summary.json").read_text())
    assert {a: s["n"] for a, s in summary["arms"].items()} == {"concat": 1, "film": 1}
    assert (tmp_path / "reports" / NAME / "report.html").is_file()


# --- 3. damaged render PNGs ----------------------------------------------------------------------------------


def grid_height(png: bytes) -> int:
    return Image.open(io.BytesIO(png)).size[1]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_render_png_is_left_out_of_the_grid_and_named_in_the_report(trained, tmp_path, damage):
    opts, store = copy_of(trained, tmp_path)
    film = record_of(store, "film")
    victim = Path(film.renders[1]["path"])
    data = victim.read_bytes()
    victim.write_bytes(b"not a png at all" if damage == "garbage" else data[: len(data) // 2])
    ablation = opts.load()

    with pytest.warns(UserWarning, match=re.escape(f"render {victim} is unreadable")):
        summary = write_ablation_report(ablation, store, tmp_path / "reports")
    out = tmp_path / "reports" / NAME
    for report in ("report.md", "report.html"):
        text = (out / report).read_text()
        assert str(victim) in text and "left out of the image grid" in text, report
    # the other frames are still drawn: 2 rows of 1.7 in (+0.4) at 100 dpi, the intact store's 3 rows are 550 px
    notes: list[str] = []
    with pytest.warns(UserWarning, match=re.escape(str(victim))):
        grid = report_figures(summary, list(store.records()), notes)["Renders on the same evaluation frames"]
    assert grid is not None and grid_height(grid) == 380
    assert len(notes) == 1 and str(victim) in notes[0] and film.renders[1]["frame_id"] in notes[0]
    _, intact = copy_of(trained, tmp_path / "intact")
    assert grid_height(image_grid(summary, list(intact.records()))) == 550


# --- 4. atomic report and metrics writes --------------------------------------------------------------------


@pytest.mark.parametrize("victim", ["curves.png", "report.md", "report.html"])
def test_a_kill_while_the_report_is_written_keeps_the_previous_file_whole(trained, tmp_path, monkeypatch, victim):
    opts, store = copy_of(trained, tmp_path)
    out = tmp_path / "reports" / NAME
    out.mkdir(parents=True)
    (out / victim).write_bytes(b"the previous report")
    kill_at_replace(monkeypatch, victim)
    with pytest.raises(Killed):
        write_ablation_report(opts.load(), store, tmp_path / "reports")
    assert (out / victim).read_bytes() == b"the previous report"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_a_kill_while_metrics_json_is_written_keeps_the_previous_file_whole(tmp_path, monkeypatch, capsys):
    import reflect.training
    from reflect.config import config_hash, load_train_config
    from reflect.train import main

    result = reflect.training.TrainResult(
        eval_history=[{"step": 4, "val/psnr": 21.5, "val/ssim": 0.75, "test/psnr": 20.25, "test/ssim": 0.5}],
        per_frame={"val": {"frame_id": ["a"], "psnr": [21.5]}}, train_history=[], parameter_counts={"total": 7},
        checkpoint="last.ckpt", wall_time_s=2.5, steps=4, lpips_status="unavailable", lpips_reason="no weights",
        resolution=(32, 32))
    def fake_train(cfg, workdir, **kwargs):  # as train() does: the workdir exists when it returns
        Path(workdir).mkdir(parents=True, exist_ok=True)
        return result

    monkeypatch.setattr(reflect.training, "train", fake_train)
    argv = [*TINY, f"output_dir={tmp_path}"]
    cfg = load_train_config(None, argv)
    metrics = tmp_path / f"{config_hash(cfg)}-s{cfg.seed}" / "metrics.json"

    assert main(argv) == 0
    assert json.loads(metrics.read_text()) == {
        "config_hash": config_hash(cfg), "eval_history": result.eval_history, "per_frame": result.per_frame,
        "parameter_counts": {"total": 7}, "lpips": "unavailable", "lpips_reason": "no weights", "wall_time_s": 2.5}
    metrics.write_text("the previous metrics")
    kill_at_replace(monkeypatch, "metrics.json")
    with pytest.raises(Killed):
        main(argv)
    assert metrics.read_text() == "the previous metrics"
    assert sorted(p.name for p in metrics.parent.iterdir()) == ["metrics.json"]
