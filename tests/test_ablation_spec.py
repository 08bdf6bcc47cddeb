"""Ablation files: valid ones expand into arms × seeds; malformed ones give the documented error."""
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reflect.ablation.spec import load_ablation
from reflect.config_loading import ConfigError

ROOT = Path(__file__).resolve().parents[1]

VALID = """
name: tiny
phase: 2
question: Does FiLM beat concat?
citations: ["FlashAvatar (CVPR 2024)", "Gaussian Head Avatar (CVPR 2024)"]
base: quick
arms:
  concat: {model.decoder.expr_conditioning: concat}
  film: {model.decoder.expr_conditioning: film}
baseline: concat
seeds: 2
metric: {name: val/psnr, mode: max, window: 3}
"""


def write(tmp_path, text, name="abl.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_valid_file_expands(tmp_path):
    abl = load_ablation(write(tmp_path, VALID), overrides=["trainer.max_steps=7", "trainer.eval_every=2"])
    assert abl.seeds == [0, 1] and list(abl.arms) == ["concat", "film"]
    assert abl.arms["film"].config.model.decoder.expr_conditioning == "film"
    assert abl.arms["concat"].config.trainer.max_steps == 7  # CLI overrides reach every arm
    assert load_ablation(write(tmp_path, VALID), seeds=[5, 9]).seeds == [5, 9]


def test_repo_ablation_file_is_valid():
    abl = load_ablation(ROOT / "ablations" / "film_vs_concat.yaml")
    assert set(abl.arms) == {"none", "concat", "film"} and abl.baseline == "concat"
    assert {a.config.model.decoder.expr_conditioning for a in abl.arms.values()} == {"none", "concat", "film"}


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("name: x\nphase: [1\n", r"YAML syntax error at line"),
        ("", r"empty"),
        ("- a\n- b\n", r"expected a mapping.*list"),
        (VALID + "colour: red\n", r"colour.*unknown key|unknown key.*colour"),
        (VALID.replace('citations: ["FlashAvatar (CVPR 2024)", "Gaussian Head Avatar (CVPR 2024)"]',
                       'citations: ["FlashAvatar"]'), r"citations: expected at least two"),
        (VALID.replace("baseline: concat", "baseline: nope"), r"baseline: expected one of the arms"),
        (VALID.replace("{model.decoder.expr_conditioning: film}", "{model.decoder.expr_condition: film}"),
         r"arms\.film\.model\.decoder\.expr_condition.*unknown key"),
        (VALID.replace("{model.decoder.expr_conditioning: film}", "{model.decoder.expr_conditioning: sideways}"),
         r"expr_conditioning: expected one of"),
        (VALID.replace("phase: 2", "phase: 9"), r"phase: expected a roadmap phase"),
        (VALID.replace("seeds: 2", "seeds: [1, 1]"), r"seeds: expected"),
        (VALID.replace("name: val/psnr,", "name: val/sharpness,"), r"metric.*name: expected <val\|test\|mirror>"),
        (VALID.replace("{model.decoder.expr_conditioning: film}",
                       "{model.decoder.expr_conditioning: film, eval.splits: [test]}"),
         r"metric.name.*split 'val' is not evaluated in arm 'film'"),
    ],
)
def test_malformed_files_name_file_and_key(tmp_path, text, pattern):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=pattern) as info:
        load_ablation(path)
    assert str(path) in str(info.value)


def test_cli_reports_errors_without_traceback(tmp_path):
    path = write(tmp_path, VALID.replace("baseline: concat", "baseline: nope"))
    proc = subprocess.run([sys.executable, "-m", "reflect.ablate", str(path), "--dry-run"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "baseline: expected one of the arms" in proc.stderr.replace("\n", " ")


def test_region_metrics_and_command_line_seeds(tmp_path):
    abl = load_ablation(write(tmp_path, VALID.replace("name: val/psnr,", "name: test/psnr_wrinkles,")))
    assert abl.metric.split == "test" and abl.metric.region == "wrinkles"
    assert load_ablation(write(tmp_path, VALID)).metric.region is None
    with pytest.raises(ConfigError, match=r"--seeds.*distinct"):
        load_ablation(write(tmp_path, VALID), seeds=[1, 1])


@pytest.mark.parametrize("text, args, pattern", [
    (VALID.replace("name: val/psnr,", "name: val/psnr_dimples,"), [], r"synthetic head has no region 'dimples'"),
    (VALID, ["--storage", "postgresql://nobody@127.0.0.1:1/reflect"], r"--storage.*cannot open Optuna storage"),
    (VALID, ["--seeds", "1,1"], r"--seeds.*distinct"),
])
def test_dry_run_checks_region_storage_and_seeds(tmp_path, text, args, pattern):
    path = write(tmp_path, text)
    proc = subprocess.run([sys.executable, "-m", "reflect.ablate", str(path), "--dry-run", *args],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert re.search(pattern, " ".join(proc.stderr.split())), proc.stderr


@pytest.mark.parametrize("module", ["reflect.ablate", "reflect.sweep", "reflect.train"])
def test_overrides_after_options_are_accepted(module):
    """The README's own `FILE --profile full data.root=...` order (argparse rejects it on Python < 3.12)."""
    import importlib

    parse = importlib.import_module(module).parse_args
    if module == "reflect.train":
        args = parse(["--no-resume", "trainer.max_steps=5", "data.root=/data/306"])
        assert args.items == ["trainer.max_steps=5", "data.root=/data/306"] and args.no_resume
    else:
        args = parse(["f.yaml", "--workers", "2", "data.root=/data/306", "trainer.max_steps=5"])
        assert args.file == "f.yaml" and args.overrides == ["data.root=/data/306", "trainer.max_steps=5"]
        assert args.workers == 2


def test_workers_default_to_auto_and_refuse_what_is_not_a_positive_count(capsys):
    from reflect.ablate import parse_args

    assert parse_args(["f.yaml"]).workers is None  # auto: machine.auto_workers decides
    assert parse_args(["f.yaml", "--workers", "auto"]).workers is None
    assert parse_args(["f.yaml", "--workers", "3"]).workers == 3
    for bad in ("0", "two"):
        with pytest.raises(SystemExit) as exit_:
            parse_args(["f.yaml", "--workers", bad])
        assert exit_.value.code == 2
        assert "--workers" in capsys.readouterr().err


def test_auto_workers_is_one_per_core_on_the_cpu_and_one_per_gpu(monkeypatch):
    from reflect.ablation import machine

    monkeypatch.setattr(machine.torch.cuda, "is_available", lambda: False)
    for cores, workers, threads in [(1, 1, "1 thread each"), (2, 2, "1 thread each"), (16, 4, "4 threads each")]:
        monkeypatch.setattr(machine, "usable_cores", lambda cores=cores: cores)
        got, why = machine.auto_workers()
        assert got == workers and why.endswith(threads), (cores, got, why)
    assert machine.auto_workers(("0", "1", "2"))[0] == 3
    monkeypatch.setattr(machine.torch.cuda, "is_available", lambda: True)
    assert machine.auto_workers()[0] == 1  # one trial on the GPU; --gpus for more


def test_usable_cores_follow_the_affinity(monkeypatch):
    """A job limited to 2 of a node's 64 cores (SLURM --cpus-per-task, taskset) must size its workers for 2."""
    from reflect.ablation import machine

    monkeypatch.setattr(machine.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert machine.usable_cores() == 2


def test_cpu_device_kind_names_the_model_and_the_threads_a_trial_trains_with(monkeypatch, tmp_path):
    """The status page forecasts trial-hours per device kind: 1- and 2-thread CPU trials must not share a key."""
    from reflect.ablation import execute

    monkeypatch.setattr(execute.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(execute, "cpu_model", lambda: "AMD EPYC")
    kinds = {}
    for threads in (1, 2):
        monkeypatch.setattr(execute.torch, "get_num_threads", lambda threads=threads: threads)
        kinds[threads] = execute.device_kind()
    assert kinds == {1: "cpu: AMD EPYC (1 thread)", 2: "cpu: AMD EPYC (2 threads)"}
    assert execute.provenance()["threads"] == 2


def test_cpu_model_reads_cpuinfo_and_falls_back_to_platform(tmp_path, monkeypatch):
    from reflect.ablation import execute

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC 7B13\n")
    assert execute.cpu_model(str(info)) == "AMD EPYC 7B13"
    monkeypatch.setattr(execute.platform, "processor", lambda: "x86_64-proc")
    info.write_text("processor\t: 0\nmodel name\t: \n")  # a blank name says nothing: ask platform
    assert execute.cpu_model(str(info)) == "x86_64-proc"
    assert execute.cpu_model(str(tmp_path / "missing")) == "x86_64-proc"  # no cpuinfo (macOS, Windows)
    monkeypatch.setattr(execute.platform, "processor", lambda: "")
    monkeypatch.setattr(execute.platform, "machine", lambda: "")
    assert execute.cpu_model(str(tmp_path / "missing")) == "cpu"
