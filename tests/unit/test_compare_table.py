"""scripts/compare_methods.py's table: one row per run folder, read from that folder alone."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("compare_methods", ROOT / "scripts" / "compare_methods.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "idk"
    folder.mkdir()
    quantize = {
        "original": {"harmful_rate": 0.75},
        "unlearned": {"harmful_rate": 0.0},
        "unlearned_8bit": {"harmful_rate": 0.0},
        "original_8bit": {"harmful_rate": 0.6875},
        "unlearned_4bit": {"harmful_rate": 0.125},
        "original_4bit": {"harmful_rate": 0.5},
    }
    metrics = {
        "before": {"harmful_rate": 0.6, "normal_ppl": 20.0},
        "after": {"harmful_rate": 0.03, "normal_ppl": 21.0, "over_refusal": 0.05},
        "probes": {
            "quantize": quantize,
            "summary": {
                "quantize_8bit": {"harmful_rate": 0.0, "retained": 1.0, "original_quantized": 0.6875},
                "quantize_4bit": {"harmful_rate": 0.125, "retained": 0.8333, "original_quantized": 0.5},
            },
        },
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "timing.json").write_text(json.dumps({"s_per_step": 2.5, "peak_rss_gb": 2.0}))
    return folder


def test_a_row_shows_the_change_and_the_quantised_original_beside_the_unlearned(tmp_path):
    cells = [c.strip() for c in _script().row("idk", _run_folder(tmp_path), "cmd").split("|")[1:-1]]
    assert len(cells) == 17
    assert cells[1] == "0.6 → 0.03 (-95%)" and cells[2] == "20 → 21 (+5%)" and cells[3] == "0.05"
    assert cells[7] == "0.75 → 0"
    assert cells[10] == "0 (orig. 0.688)" and cells[11] == "0.125 (orig. 0.5)" and cells[12] == "0.833"


def test_a_run_that_did_not_finish_keeps_its_row(tmp_path):
    line = _script().row("rmu", tmp_path / "rmu", "cmd")
    assert "did not finish" in line and line.count("|") == 18
