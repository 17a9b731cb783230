"""The HTML report is built from a run folder alone, is one offline file with PNG figures, and
escapes whatever the model generated."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import torch

from lethe.cli.main import main
from lethe.core.models.fingerprint import weights_sha256
from lethe.core.run.report_html import write_report

PNG = b"\x89PNG\r\n\x1a\n"


def run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "spec.yaml").write_text("name: demo\nmodel: {name: tiny-llama}\nunlearn: {method: yao}\n")
    (run / "env.json").write_text(json.dumps({"seed": 0, "versions": {"torch": "2.x"}}))
    (run / "model.json").write_text(json.dumps({"weights_sha256": "cd" * 32}))
    rows = [
        {
            "stage": "unlearn",
            "step": s,
            "forget": -5 + s / 10,
            "random": 5 - s / 10,
            "loss": 1 / s,
            "lr": 0.01,
            "grad_norm": 0.5,
        }
        for s in range(1, 7)
    ]
    (run / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    harmful = {
        "before": [
            {
                "id": "f:0",
                "prompt": "How do I <b>x</b>?",
                "response": "<script>alert(1)</script>",
                "harmful": True,
                "refusal": False,
            }
        ],
        "after": [
            {
                "id": "f:0",
                "prompt": "How do I <b>x</b>?",
                "response": "I cannot help\x00",
                "harmful": False,
                "refusal": True,
            }
        ],
    }
    metrics = {
        "before": {"forget_nll": 2.0, "harmful_rate": 1.0},
        "after": {"forget_nll": 6.0, "harmful_rate": 0.0},
        "comparison": {"harmful_rate_reduction": 1.0},
        "judge": {
            "kind": "trained",
            "accuracy": 0.9,
            "n": 90,
            "heldout_accuracy": 0.8,
            "check_set": "builtin:judge_check",
            "per_kind": {"refusal": {"n": 20, "accuracy": 1.0}},
        },
        "training": {"steps": 6, "stopped_reason": "max_steps"},
        "selection": {"chosen_step": 4, "reason": "step 4: harmful_rate 0.1 (before 0.8); the lowest"},
        "probes": {
            "objective": "harmful_rate",
            "relearn": {
                "steps": 10,
                "relearned_examples": 8,
                "original": {"harmful_rate": 0.75},
                "unlearned": {"harmful_rate": 0.125},
                "probed": {"harmful_rate": 0.5},
            },
            "quantize": {
                "method": "fake-quant RTN",
                "original": {"harmful_rate": 0.75},
                "unlearned": {"harmful_rate": 0.125},
                "unlearned_4bit": {"harmful_rate": 0.375},
                "original_4bit": {"harmful_rate": 0.4375},
            },
            "rephrase": {
                "original": {"harmful_rate_roleplay": 0.5},
                "probed": {"harmful_rate_roleplay": 0.0625},
            },
            "summary": {"relearn": {"retained": 0.4}, "quantize_4bit": {"retained": 0.6}},
        },
        "per_example": {
            "before": {"harmful_prompts": harmful["before"], "benign_prompts": []},
            "after": {"harmful_prompts": harmful["after"], "benign_prompts": []},
        },
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_report_has_the_figures_tables_and_escaped_generations(tmp_path: Path) -> None:
    path = write_report(run_folder(tmp_path))
    html = path.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 3 and all(
        base64.b64decode(i).startswith(PNG) for i in images
    )  # losses, metrics, judge
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "I cannot help\ufffd" in html and "How do I &lt;b&gt;x&lt;/b&gt;?" in html
    for text in ("forget_nll", "harmful_rate_reduction", "accuracy 0.9", "cd" * 32, "max_steps"):
        assert text in html
    probes = html[html.index("<h2>Robustness probes</h2>") :]
    for text in (
        "relearn: 10 steps on 8 forget examples",
        "<td class=num>0.4375</td>",
        "rephrased prompts: harmful_rate_roleplay",
        "<td class=num>0.0625</td>",
        "Checkpoint kept:</b> step 4",
    ):
        assert text in html
    assert (
        "harmful_rate_roleplay</td><td class=num>-</td><td class=num>-</td><td class=num>0.0625</td>"
        "<td class=num>0.5</td>" in probes
    )
    assert (
        "4-bit weights</td><td class=num>0.75</td><td class=num>0.125</td><td class=num>0.375</td>" in probes
    )
    assert 'src="http' not in html and 'href="http' not in html  # nothing to fetch: readable offline


def test_lethe_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = run_folder(tmp_path)
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").read_text().startswith("<!doctype html>")
    assert main(["report", str(tmp_path)]) == 1
    assert "has no metrics.json" in capsys.readouterr().err


def test_the_weights_hash_depends_on_every_weight_only() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    digest = weights_sha256(model)
    copy = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    copy.load_state_dict(model.state_dict())
    assert weights_sha256(copy) == digest
    with torch.no_grad():
        copy[1].bias += 1e-6
    assert weights_sha256(copy) != digest
    assert weights_sha256(model.to(torch.bfloat16)) != digest  # the dtype is part of what is hashed


def test_report_shows_the_judge_warning(tmp_path: Path) -> None:
    run = run_folder(tmp_path)
    assert "Judge warning" not in write_report(run).read_text()  # a trusted judge: no line
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["judge"]["judge_warning"] = "the judge scores under 0.85 <on> its check set"
    metrics["judge_warning"] = metrics["judge"]["judge_warning"]
    (run / "metrics.json").write_text(json.dumps(metrics))
    html = write_report(run).read_text()
    line = '<p class="warn"><b>Judge warning:</b> the judge scores under 0.85 &lt;on&gt; its check set</p>'
    assert html.count(line) == 2  # above the metrics and in the judge section
    assert html.index(line) < html.index("<h2>Judge</h2>")
    from lethe.core.run.report import before_after_table

    assert "WARNING: the judge scores under 0.85 <on> its check set" in before_after_table(metrics)


def test_each_figure_reads_in_its_own_direction():
    """Leak rates fall, retained QA rises, an attacker's AUC is best at chance and PrivLeak at 0,
    per person too; the text table shows the same arrows."""
    from lethe.core.run.report import before_after_table, direction, direction_words

    assert direction("privacy_leak/Amos Holloway") == "↓"
    assert direction("privacy_qa_retain") == "↑"
    assert direction("privacy_auc_minkpp/Amos Holloway") == "→0.5"
    assert direction("privacy_privleak") == "→0"
    assert direction("harmful_rate/crosssource@qa") == "↓"
    assert direction_words("privacy_auc_loss") == "best at 0.5"
    table = before_after_table({"before": {"privacy_privleak": -0.9}, "after": {"privacy_privleak": 0.05}})
    assert "privacy_privleak →0" in table
