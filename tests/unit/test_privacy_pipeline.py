"""The right-to-be-forgotten case end to end on a tiny model built in code: the shipped privacy data
(two forgotten people, two retained, two never seen), a short fine-tune, unlearning, and the
privacy figures in metrics.json, the checks in `comparison`, the report; plus the parts that run
the model (Min-K %++ moments) and the spec section."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lethe.core.evaluation.privacy_eval import (
    Record,
    extraction_prompts,
    load_records,
    next_token_moments,
    score_extraction,
    score_mia,
)
from lethe.core.run.pipeline import run_job
from lethe.core.run.privacy_probes import HEADLINE, probe_checks, split_subjects
from lethe.core.run.report_html import write_report
from lethe.core.spec.evaluation import PrivacyThresholds
from lethe.core.spec.job import SpecError, absolutise_sources, load_spec, parse_spec
from lethe.core.training.engine import RunHooks

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "data"
PEOPLE = 2 * 7  # the first two people of a file: 7 rows each


def _privacy(samples: int = 1) -> dict:
    return {
        "forget": {"source": "privacy_forget.jsonl", "limit": PEOPLE},
        "retain": {"source": "privacy_retain.jsonl", "limit": PEOPLE},
        "holdout": {"source": "privacy_holdout.jsonl", "limit": PEOPLE},
        "samples": samples,
        "generation": {"max_new_tokens": 6, "do_sample": True, "batch_size": 16},
        "qa_max_new_tokens": 6,
    }


def tiny_privacy_spec() -> dict:
    pairs = {"schema": "pairs", "limit": PEOPLE}
    return {
        "name": "privacy-tiny",
        "seed": 0,
        "model": {"name": "tiny-llama", "device": "cpu"},
        "lora": {"rank": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj", "up_proj", "down_proj"]},
        "format": {"max_length": 96},
        "finetune": {
            "data": {"source": "privacy_train.jsonl", **pairs},
            "train": {"lr": 0.01, "steps": 4, "batch_size": 8},
        },
        "unlearn": {
            "method": "yao",
            "forget": {"source": "privacy_forget.jsonl", **pairs},
            "normal": {"source": "privacy_retain.jsonl", **pairs},
            "train": {"lr": 0.02, "steps": 2, "batch_size": 2},
        },
        "eval": {"privacy": _privacy(), "batch_size": 16},
        # the privacy probes: relearn on the first forgotten person, measure the second; NF4
        "probes": {
            "relearn": {"steps": 2, "batch_size": 2, "lr": 0.01},
            "quantize": {"bits": [4], "scheme": "nf4"},
            "rephrase": None,
            "max_examples": 4,
        },
    }


@pytest.fixture(scope="module")
def privacy_run(tmp_path_factory):
    spec = absolutise_sources(parse_spec(tiny_privacy_spec()), DATA)
    out = tmp_path_factory.mktemp("run") / "privacy"
    progress: list = []
    run_job(spec, out, RunHooks(on_progress=progress.append))
    return out, progress


def test_the_privacy_pipeline_writes_every_figure_before_and_after(privacy_run):
    out, progress = privacy_run
    metrics = json.loads((out / "metrics.json").read_text())
    names = ["privacy_leak_forget", "privacy_leak_retain", "privacy_qa_forget", "privacy_qa_retain"]
    names += ["privacy_qa_holdout", "privacy_privleak", "privacy_ks_p"]
    names += [f"privacy_auc_{a}" for a in ("loss", "zlib", "mink", "minkpp")]
    forgotten = ["Amos Holloway", "Zelda Abernathy"]
    names += [f"privacy_{k}/{who}" for k in ("leak", "qa", "auc_minkpp") for who in forgotten]
    for when in ("before", "after"):
        missing = [n for n in names if n not in metrics[when]]
        assert not missing, (when, missing)
        assert all(math.isfinite(metrics[when][n]) for n in names)
    checks = metrics["comparison"]["privacy_checks"]
    assert [c["name"] for c in checks] == [
        "privacy_leak_forget",
        "privacy_qa_forget",
        "privacy_qa_retain",
        "privacy_privleak",
    ]  # no normal set in this spec: no perplexity check
    assert all(c["explanation"] and isinstance(c["passed"], bool) for c in checks)
    assert metrics["comparison"]["privacy_passed"] in (True, False)
    extraction = metrics["per_example"]["after"]["privacy_extraction_forget"]
    assert len(extraction) == 2 * 7  # per person: 3 direct, 3 indirect, 1 name continuation
    last = [p for p in progress if p.stage == "eval_after"][-1]
    assert last.step == last.total  # the planned total counts every privacy sample and record


def test_the_report_explains_the_privacy_figures(privacy_run):
    text = write_report(privacy_run[0]).read_text()
    assert "Privacy: the right to be forgotten" in text
    assert "Amos Holloway" in text and "PrivLeak" in text
    assert "pass" in text or "FAIL" in text


def test_the_privacy_probes_measure_the_people_not_relearned(privacy_run):
    """The relearn probe fine-tunes on Amos Holloway's records and measures Zelda Abernathy only;
    the NF4 probe measures both; each carries the declared forgetting checks, shown in the report."""
    probes = json.loads((privacy_run[0] / "metrics.json").read_text())["probes"]
    relearn = probes["privacy_relearn"]
    assert relearn["relearned_subjects"] == ["Amos Holloway"]
    assert relearn["measured_subjects"] == ["Zelda Abernathy"]
    for part in (relearn["unlearned"], relearn["probed"], probes["privacy_quantize"]["unlearned_4bit"]):
        assert set(part) == set(HEADLINE)
    # measured on one person: the unlearned model's leak rate there is that person's own figure
    after = json.loads((privacy_run[0] / "metrics.json").read_text())["after"]
    assert relearn["unlearned"]["privacy_leak_forget"] == after["privacy_leak/Zelda Abernathy"]
    # the NF4 probe's "unlearned" is the job's own evaluation after unlearning, not run again
    quantize = probes["privacy_quantize"]["unlearned"]
    assert quantize == {k: after[k] for k in HEADLINE}
    checks = probes["privacy_checks"]
    assert set(checks) == {"privacy_relearn", "privacy_quantize_4bit"}
    assert [c["name"] for c in checks["privacy_relearn"]] == [
        "privacy_leak_forget",
        "privacy_qa_forget",
        "privacy_privleak",
    ]
    assert "Does the forgetting hold?" in write_report(privacy_run[0]).read_text()


def test_probe_checks_apply_the_forgetting_thresholds_to_each_probe():
    """Relearning brought one leak back (0 -> 0.1 > 0): fail; NF4 kept it at 0: pass."""
    quiet = {"privacy_leak_forget": 0.0, "privacy_qa_forget": 0.0, "privacy_qa_holdout": 0.0}
    report = {
        "privacy_relearn": {"unlearned": quiet, "probed": {**quiet, "privacy_leak_forget": 0.1}},
        "privacy_quantize": {"method": "nf4", "unlearned": quiet, "unlearned_4bit": quiet},
    }
    thresholds = PrivacyThresholds(max_abs_privleak=None)
    checks = probe_checks(report, thresholds)
    assert [c["passed"] for c in checks["privacy_relearn"]] == [False, True]
    assert [c["passed"] for c in checks["privacy_quantize_4bit"]] == [True, True]


def test_split_subjects_keeps_order_and_needs_two_people():
    rows = [Record(str(i), who, "f", "q", "a", "s") for i, who in enumerate("BBAACC")]
    assert split_subjects(rows) == (["B"], ["A", "C"])
    with pytest.raises(ValueError, match="two forgotten people"):
        split_subjects(rows[:2])


def test_extraction_prompts_per_person():
    records = load_records(
        parse_spec(tiny_privacy_spec()).eval.privacy.forget.model_copy(
            update={"source": str(DATA / "privacy_forget.jsonl")}
        )
    )
    prompts = extraction_prompts(records, ["email", "phone", "address"])
    kinds = [k for s, k, _ in prompts if s == "Amos Holloway"]
    assert kinds == ["direct"] * 3 + ["indirect"] * 3 + ["continuation"]
    assert ("Amos Holloway", "continuation", "Amos Holloway") in prompts


def test_scores_from_rows():
    """Two people: A leaks in 1 of 2 samples, B in 0 of 2; A's records score above the
    holdout's on every attack (AUC 1) and B's below (AUC 0): overall AUC ½, PrivLeak 0."""
    rows = [
        {"subject": "A", "leaked": [True, False]},
        {"subject": "B", "leaked": [False, False]},
    ]
    assert score_extraction(rows, "forget") == {
        "privacy_leak_forget": 0.25,
        "privacy_leak/A": 0.5,
        "privacy_leak/B": 0.0,
    }
    attacks = ("loss", "zlib", "mink", "minkpp")
    forget = [{"subject": s, **dict.fromkeys(attacks, v)} for s, v in (("A", 3.0), ("B", 1.0))]
    holdout = [{"subject": "H", **dict.fromkeys(attacks, 2.0)}]
    metrics = score_mia(forget, holdout)
    assert metrics["privacy_auc_minkpp"] == 0.5 and metrics["privacy_privleak"] == 0.0
    assert metrics["privacy_auc_minkpp/A"] == 1.0 and metrics["privacy_auc_minkpp/B"] == 0.0


def test_next_token_moments_by_hand():
    """A distribution (¼, ¾): μ = ¼ ln ¼ + ¾ ln ¾, σ² = ¼ ln²¼ + ¾ ln²¾ − μ²; a uniform one has σ = 0
    (floored at 1e-3). The last position predicts nothing and is dropped: [1, 3, 2] → [1, 2]."""
    logits = torch.tensor([[[math.log(0.25), math.log(0.75)], [0.0, 0.0], [5.0, 5.0]]])
    mean, std = next_token_moments(logits)
    mu = 0.25 * math.log(0.25) + 0.75 * math.log(0.75)
    var = 0.25 * math.log(0.25) ** 2 + 0.75 * math.log(0.75) ** 2 - mu**2
    assert mean.shape == std.shape == (1, 2)
    assert mean[0, 0].item() == pytest.approx(mu, abs=1e-6)
    assert std[0, 0].item() == pytest.approx(math.sqrt(var), abs=1e-5)
    assert mean[0, 1].item() == pytest.approx(math.log(0.5), abs=1e-6)
    assert std[0, 1].item() == pytest.approx(1e-3)


def test_the_privacy_section_rejects_unknown_keys_and_the_example_parses():
    spec = tiny_privacy_spec()
    spec["eval"]["privacy"]["sample"] = 3
    with pytest.raises(SpecError, match="sample"):
        parse_spec(spec)
    spec = tiny_privacy_spec()
    spec["eval"]["privacy"]["thresholds"] = {"max_leak": 0.0}
    with pytest.raises(SpecError, match="max_leak"):
        parse_spec(spec)
    example = load_spec(ROOT / "examples" / "privacy-smollm2.yaml")
    assert example.eval.privacy is not None and example.eval.privacy.thresholds.max_abs_privleak == 0.1
    assert Path(example.eval.privacy.holdout.source).is_file()
