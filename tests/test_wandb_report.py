"""W&B mirror of a report: the verdict table as an offline run of the group, and a report built offline."""
import json

import pytest

from reflect.config import TrackingConfig
from reflect.reports.wandb_report import (SUMMARY_COLUMNS, build_report, log_summary_table, publish_report,
                                          report_definition, summary_rows)

SUMMARY = {
    "ablation": "tiny", "phase": 2, "question": "q?", "citations": ["a", "b"], "generated_at": "now",
    "metric": {"name": "val/psnr"}, "design": {"looks": [3, 5]},
    "arms": {"concat": {"n": 3, "mean": 30.0, "delta_db": 0.0, "delta_ci": None, "verdict": "baseline"},
             "film": {"n": 3, "mean": 31.0, "delta_db": 1.0, "delta_ci": [0.5, 1.5], "interval_confidence": 0.99,
                      "verdict": "better", "decided_at": 3, "p_values": {"better": {"p": 0.001}}}},
}


def test_rows_and_definition_carry_the_summary_numbers():
    rows = summary_rows(SUMMARY)
    assert rows[1][:8] == ["film", 3, 31.0, 1.0, 0.5, 1.5, 0.99, "better"] and len(rows[1]) == len(SUMMARY_COLUMNS)
    definition = report_definition(SUMMARY, TrackingConfig(project="reflect", entity="team"))
    assert definition["group"] == "tiny" and "| film | 3 | 31.000 | 1.000 | 0.500 | 1.500 | 0.990 | better |" in \
        definition["verdict_table_markdown"]
    report = build_report(definition)  # wandb-workspaces objects, no network
    assert report.title == "Ablation tiny (phase 2)" and len(report.blocks) == 7


def test_summary_table_is_an_offline_run_of_the_group(tmp_path, monkeypatch):
    import wandb

    calls = []
    real_init = wandb.init

    def spy_init(*args, **kwargs):  # records the arguments, then the real (offline) init
        calls.append(kwargs)
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", spy_init)
    run_id = log_summary_table(SUMMARY, TrackingConfig(mode="offline"), tmp_path)
    assert len(calls) == 1
    assert calls[0]["group"] == "tiny" and calls[0]["job_type"] == "summary" and calls[0]["mode"] == "offline"
    assert calls[0]["id"] == run_id
    runs = list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
    tables = list((runs[0] / "files" / "media" / "table").glob("verdicts_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"] == SUMMARY_COLUMNS
    assert table["data"] == summary_rows(SUMMARY)
    assert table["data"][1] == ["film", 3, 31.0, 1.0, 0.5, 1.5, 0.99, "better", 3, 0.001, None, None]
    assert log_summary_table(SUMMARY, TrackingConfig(wandb=False), tmp_path) is None
    assert len(calls) == 1  # disabled: W&B is not even initialised


def test_publishing_offline_says_why():
    with pytest.raises(RuntimeError, match="not online"):
        publish_report(report_definition(SUMMARY, TrackingConfig()), TrackingConfig(mode="offline"))
