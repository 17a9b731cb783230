"""The retrain reference of an erasure: TOFU's truth ratio by hand, the retrain set without the
forgotten people, PrivLeak and forget quality against the reference, the checks that use them, and
the whole path on a tiny model (a second fine-tune without the forgotten people's rows)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lethe.core.data.examples import Example
from lethe.core.evaluation import privacy
from lethe.core.evaluation.privacy_checks import privacy_checks
from lethe.core.run.pipeline import run_job
from lethe.core.run.privacy_reference import REFERENCE_FILE, compare_to_reference, without_people
from lethe.core.spec.evaluation import PrivacyThresholds
from lethe.core.spec.job import SpecError, absolutise_sources, parse_spec
from lethe.core.training.hooks import RunHooks

DATA = Path(__file__).resolve().parents[2] / "examples" / "data"


def test_truth_ratio_by_hand():
    """Paraphrase at 0.5 nats per token, wrong answers at 1 and 2: ((e^-1 + e^-2)/2) / e^-0.5."""
    expected = ((math.exp(-1) + math.exp(-2)) / 2) / math.exp(-0.5)
    assert privacy.truth_ratio(0.5, [1.0, 2.0]) == pytest.approx(expected)
    assert privacy.truth_ratio(1.0, [1.0]) == pytest.approx(1.0)  # cannot tell truth from wrong
    with pytest.raises(ValueError, match="wrong answer"):
        privacy.truth_ratio(1.0, [])


def test_the_retrain_set_names_none_of_the_forgotten_people():
    rows = [
        Example("1", "Where does Ada Lee live?", "At 1 Elm Road."),
        Example("2", "Tell me about someone.", "Ada Lee works at a bakery."),
        Example("3", "Where does Bo Kim live?", "At 2 Oak Road."),
    ]
    assert [e.id for e in without_people(rows, ["Ada Lee"])] == ["3"]


def test_privleak_and_forget_quality_against_the_reference():
    """The unlearned model's AUC 0.6 against the retrain model's 0.55: MUSE's (0.4 - 0.45) / 0.45;
    truth ratios drawn from the same values as the reference's: KS p-value 1."""
    evaluated = {
        "metrics": {"privacy_auc_minkpp": 0.6},
        "per_example": {"privacy_truth_forget": [{"truth_ratio": v} for v in (0.2, 0.5, 0.9)]},
    }
    reference = {"metrics": {"privacy_auc_minkpp": 0.55}, "truth_ratios_forget": [0.2, 0.5, 0.9]}
    found = compare_to_reference(evaluated, reference)
    assert found["privacy_privleak_retrain"] == pytest.approx((0.4 - 0.45) / 0.45)
    assert found["privacy_forget_quality"] == pytest.approx(1.0)
    assert compare_to_reference(evaluated, None) == {}


def test_the_checks_use_the_retrain_figures_when_there_are_some():
    after = {"privacy_privleak": -0.5, "privacy_privleak_retrain": 0.02, "privacy_forget_quality": 0.01}
    t = PrivacyThresholds(max_forget_leak_rate=None, max_forget_qa_over_holdout=None, max_retain_qa_drop=None)
    checks = {c["name"]: c["passed"] for c in privacy_checks({}, after, t)}
    assert checks == {"privacy_privleak_retrain": True, "privacy_forget_quality": False}
    holdout_only = {c["name"]: c["passed"] for c in privacy_checks({}, {"privacy_privleak": -0.5}, t)}
    assert holdout_only == {"privacy_privleak": False}  # no reference: no forget-quality check


def _spec() -> dict:
    people = 2 * 7  # the first two people of the forget file
    return {
        "name": "privacy-retrain-tiny",
        "seed": 0,
        "model": {"name": "tiny-llama", "device": "cpu"},
        "lora": {"rank": 4, "alpha": 8},
        "format": {"max_length": 160},  # room for every answer: none truncated away
        # the first 6 people of the training file: the 5 forgotten first, then one retained
        "finetune": {
            "data": {"source": "privacy_train.jsonl", "schema": "pairs", "limit": 42},
            "train": {"lr": 0.01, "steps": 2, "batch_size": 4},
        },
        "unlearn": {
            "method": "ga",
            "forget": {"source": "privacy_forget.jsonl", "schema": "pairs", "limit": people},
            "train": {"lr": 0.01, "steps": 1, "batch_size": 2},
        },
        "eval": {
            "privacy": {
                "forget": {"source": "privacy_forget.jsonl", "limit": people},
                "retain": {"source": "privacy_retain.jsonl", "limit": people},
                "holdout": {"source": "privacy_holdout.jsonl", "limit": people},
                "samples": 1,
                "generation": {"max_new_tokens": 4, "do_sample": True, "batch_size": 16},
                "qa_max_new_tokens": 4,
                "reference": "retrain",
            },
            "batch_size": 16,
        },
    }


def test_retrain_needs_a_finetune_stage():
    spec = _spec()
    del spec["finetune"]
    with pytest.raises(SpecError, match="reference: retrain"):
        parse_spec(spec)


def test_a_job_with_a_retrain_reference_checks_against_it(tmp_path):
    out = tmp_path / "run"
    run_job(absolutise_sources(parse_spec(_spec()), DATA), out, RunHooks())
    reference = json.loads((out / REFERENCE_FILE).read_text())
    assert reference["removed_examples"] == 14 and reference["trained_examples"] == 28
    assert 0 <= reference["metrics"]["privacy_auc_minkpp"] <= 1
    assert len(reference["truth_ratios_forget"]) == 12  # 6 QA rows per person with wrong answers
    comparison = json.loads((out / "metrics.json").read_text())["comparison"]
    after = comparison["privacy_reference"]["after"]
    assert 0 <= after["privacy_forget_quality"] <= 1 and math.isfinite(after["privacy_privleak_retrain"])
    names = [c["name"] for c in comparison["privacy_checks"]]
    assert "privacy_privleak_retrain" in names and "privacy_forget_quality" in names
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert {row["stage"] for row in log} >= {"finetune", "unlearn", "retrain"}
