"""Verdicts on really trained trials (tiny quick-profile runs): an A/A and a planted handicap.

The A/A arm differs from the baseline by one Gaussian (401 vs 400), which redraws the random stream
without changing the method; the identical arm ``same`` trains bit-identically (common seeds, deterministic
training), so its paired differences are exactly 0 and it is ``equivalent`` at once, with a zero-width interval.
The handicapped arm trains a fifth of the steps. Sequential design: looks at 3 and 5 seeds.
"""
import json

import pytest

from omegaconf import OmegaConf

from reflect.ablation.runner import RunOptions, run_ablation, store_for
from reflect.reports.ablation import write_ablation_report

from conftest import TINY

ABLATION = """
name: aa_handicap
phase: 1
question: Does the harness call an A/A change neutral and a planted handicap worse?
citations: ["A/A tests (Kohavi et al., Trustworthy Online Controlled Experiments, 2020)", "Jennison & Turnbull (2000)"]
base: tiny.yaml
arms:
  base: {}
  same: {}
  aa: {model.gaussians.num_gaussians: 401}
  handicap: {trainer.max_steps: 6}
baseline: base
seeds: {min: 3, max: 5, looks: [3, 5]}
metric: {name: val/psnr, mode: max, window: 2}
decision: {min_effect_db: 0.1}
"""
STEPS = ["trainer.max_steps=30", "trainer.eval_every=5", "trainer.checkpoint_every=10"]


def test_aa_is_not_called_and_the_handicap_is_worse_at_the_first_look(tmp_path):
    path = tmp_path / "aa_handicap.yaml"
    path.write_text(ABLATION)
    # the tiny settings as the ablation's base config (command-line overrides would beat the arms' own)
    base = OmegaConf.to_container(OmegaConf.from_dotlist(["profile=quick", *TINY, *STEPS]))
    (tmp_path / "tiny.yaml").write_text(OmegaConf.to_yaml(base))
    opts = RunOptions(path=str(path), runs_dir=str(tmp_path / "runs"))
    ablation = run_ablation(opts)
    assert ablation.arms["handicap"].config.trainer.max_steps == 6
    assert ablation.arms["aa"].config.trainer.max_steps == 30
    summary = write_ablation_report(ablation, store_for(ablation, opts.runs_dir), tmp_path / "reports")
    arms = summary["arms"]
    handicap, aa = arms["handicap"], arms["aa"]
    assert handicap["verdict"] == "worse" and handicap["decided_at"] == 3
    assert handicap["delta_ci"][1] < -0.1
    assert aa["verdict"] not in ("better", "worse")
    same = arms["same"]
    assert same["verdict"] == "equivalent" and same["decided_at"] == 3 and same["delta_ci"] == [0.0, 0.0]
    # a decided arm stops getting seeds; the A/A arm goes on to the next look unless it was decided
    records = list(store_for(ablation, opts.runs_dir).records())
    seeds = {arm: sorted(r.seed for r in records if r.arm == arm) for arm in ablation.arms}
    assert seeds["handicap"] == [0, 1, 2]
    assert seeds["aa"] == list(range(aa["decided_at"] or 5))
    assert seeds["base"] == seeds["aa"]
    on_disk = json.loads((tmp_path / "reports" / "aa_handicap" / "summary.json").read_text())
    assert on_disk["arms"]["handicap"]["p_values"]["worse"]["rejected"] is True
    report = (tmp_path / "reports" / "aa_handicap" / "report.md").read_text()
    assert "worse at 3 seeds" in report
    assert aa["next_seeds"] is None and handicap["next_seeds"] is None
    # frames describe the same comparison: the handicap loses on every frame, by about its mean loss
    assert handicap["frames"]["share_improved"] == 0.0
    worst = [gain for _, gain in handicap["frames"]["worst"]]
    assert handicap["frames"]["frames"] == len(worst) == 3  # the tiny head has 3 val frames: all listed
    assert sum(worst) / 3 == pytest.approx(handicap["delta_db"], abs=1e-9)  # val/psnr is the frames' mean
