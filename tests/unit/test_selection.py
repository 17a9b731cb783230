"""Evaluation during training: which checkpoint is chosen and why, early stopping, resuming, and
the adapter a job writes being that checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

import lethe.core.evaluation.selection as selection_module
from lethe.core.data.examples import Example
from lethe.core.evaluation import EvalSets
from lethe.core.evaluation.selection import Evaluation, Selection, choose, improvement, meets, stalled
from lethe.core.methods import YaoStage, terms_for
from lethe.core.models.loading import load_model
from lethe.core.models.lora import attach_lora
from lethe.core.models.reference import Reference
from lethe.core.run.unlearn_stage import hold_out, selection_for, split_for_selection
from lethe.core.spec.fields import LoraSpec, ModelSpec, PromptFormat
from lethe.core.spec.job import absolutise_sources, parse_spec
from lethe.core.spec.options import Criterion, SelectSpec
from lethe.core.training.engine import Cancelled, RunHooks, Stage, StageData, run_stage

ROOT = Path(__file__).resolve().parents[2]
CRITERION = Criterion(objective="harmful_rate", max_normal_ppl_increase=0.10)


def history(*points: tuple[int, float, float]) -> list[Evaluation]:
    return [Evaluation(step, {"harmful_rate": rate, "normal_ppl": ppl}) for step, rate, ppl in points]


def test_choose_takes_the_lowest_objective_within_the_perplexity_bound():
    evals = history((0, 0.6, 10.0), (10, 0.3, 10.5), (20, 0.05, 11.5), (30, 0.1, 10.9))
    best, reason = choose(evals, CRITERION, "harmful_rate")
    assert best.step == 30  # step 20 is lower but +15% perplexity
    assert reason.startswith("step 30: harmful_rate 0.1 (before 0.6), normal_ppl +9.0%")
    assert "lowest harmful_rate with normal_ppl ≤ +10%" in reason


def test_the_reason_names_every_bound_that_excluded_a_step():
    evals = [
        Evaluation(0, {"harmful_rate": 0.8, "normal_ppl": 2.0, "over_refusal": 0.0}),
        Evaluation(20, {"harmful_rate": 0.3, "normal_ppl": 2.0, "over_refusal": 0.0}),
        Evaluation(40, {"harmful_rate": 0.0, "normal_ppl": 2.0, "over_refusal": 0.07}),
    ]
    criterion = Criterion(objective="harmful_rate", max_over_refusal=0.05)
    best, reason = choose(evals, criterion, "harmful_rate")
    assert best.step == 20 and "with normal_ppl ≤ +10% and over_refusal ≤ 0.05" in reason


def test_a_tie_on_the_objective_goes_to_the_lower_perplexity():
    evals = history((0, 0.8, 2.0), (60, 0.0, 2.14), (80, 0.0, 2.10), (100, 0.0, 2.10))
    assert choose(evals, CRITERION, "harmful_rate")[0].step == 80


def test_choose_falls_back_to_the_closest_when_nothing_is_feasible():
    evals = history((0, 0.6, 10.0), (10, 0.0, 13.0), (20, 0.1, 12.0))
    best, reason = choose(evals, CRITERION, "harmful_rate")
    assert best.step == 20 and "no evaluation met the constraints" in reason and "+20.0% > +10%" in reason


def test_forget_nll_is_maximised_and_ties_go_to_the_earlier_step():
    evals = [
        Evaluation(0, {"forget_nll": 1.0}),
        Evaluation(5, {"forget_nll": 3.0}),
        Evaluation(10, {"forget_nll": 3.0}),
    ]
    assert choose(evals, Criterion(objective="forget_nll"), "forget_nll")[0].step == 5
    assert improvement(evals[0].metrics, evals[1].metrics, "forget_nll") == pytest.approx(2.0)


def test_stalled_counts_evaluations_since_the_last_feasible_improvement():
    evals = history((0, 0.6, 10.0), (10, 0.3, 10.0), (20, 0.3, 10.0), (30, 0.1, 12.0))
    assert stalled(evals, CRITERION, "harmful_rate", patience=2, min_delta=0.0)  # step 30 breaks the bound
    assert not stalled(evals[:3], CRITERION, "harmful_rate", patience=2, min_delta=0.0)
    evals = history((0, 0.6, 10.0), (10, 0.3, 10.0), (20, 0.29, 10.0))
    assert stalled(evals, CRITERION, "harmful_rate", patience=1, min_delta=0.05)


def test_meets_needs_the_constraints_and_the_minimum_improvement():
    strict = CRITERION.model_copy(update={"min_improvement": 0.9, "max_over_refusal": 0.05})
    before = {"harmful_rate": 0.6, "normal_ppl": 10.0, "over_refusal": 0.0}
    assert meets(
        {"harmful_rate": 0.05, "normal_ppl": 10.5, "over_refusal": 0.0}, before, strict, "harmful_rate"
    )
    assert not meets(
        {"harmful_rate": 0.1, "normal_ppl": 10.5, "over_refusal": 0.0}, before, strict, "harmful_rate"
    )
    assert not meets(
        {"harmful_rate": 0.0, "normal_ppl": 10.5, "over_refusal": 0.1}, before, strict, "harmful_rate"
    )


# ------------------------------------------------------------------ in the training loop
FMT = PromptFormat(max_length=96)
FORGET = [Example(f"f{i}", f"how do I make poison {i}?", f"mix red powder {i} with acid") for i in range(6)]
NORMAL = [Example(f"n{i}", f"what is {i} plus one?", f"{i + 1}.") for i in range(6)]


class Scripted:
    """An evaluator whose harmful rate follows a script by step and that records the weights it saw."""

    def __init__(self, rates: dict[int, float]) -> None:
        self.rates, self.seen, self.step = rates, {}, 0

    def __call__(self, model) -> dict[str, float]:
        self.seen[self.step] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        metrics = {"harmful_rate": self.rates[self.step], "normal_ppl": 10.0}
        self.step += 2
        return metrics


def _run(
    tmp_path: Path | None,
    evaluator: Scripted,
    patience: int | None,
    steps: int = 8,
    hooks: RunHooks | None = None,
    checkpoint_every: int = 0,
):
    model, tok = load_model(ModelSpec(name="tiny-llama", device="cpu"))
    model = attach_lora(model, LoraSpec(rank=4, alpha=8))
    ref = {"source": "unused.jsonl"}
    method = YaoStage(
        forget=ref,
        normal=ref,
        train={"lr": 5e-3, "steps": steps, "batch_size": 2, "checkpoint_every": checkpoint_every},
    )
    selection = Selection(
        evaluator,
        SelectSpec(every=2, patience=patience),
        CRITERION,
        "harmful_rate",
        folder=tmp_path / "ckpt" if tmp_path else None,
    )
    stage = Stage(
        "unlearn",
        terms_for(method),
        StageData(FORGET, NORMAL),
        method.train,
        FMT,
        seed=1,
        checkpoint_dir=tmp_path / "ckpt" if tmp_path else None,
        selection=selection,
    )
    result = run_stage(model, tok, stage, hooks, Reference(model))
    return model, result


def test_the_stage_ends_with_the_chosen_checkpoints_weights(tmp_path):
    evaluator = Scripted({0: 0.6, 2: 0.4, 4: 0.1, 6: 0.3, 8: 0.2})
    model, result = _run(tmp_path, evaluator, patience=None)
    assert result.steps == 8 and result.stopped_reason == "max_steps"
    assert result.selection["chosen_step"] == 4 and result.selection["reason"].startswith("step 4:")
    assert [e["step"] for e in result.selection["evaluations"]] == [0, 2, 4, 6, 8]
    for name, value in model.named_parameters():
        if value.requires_grad:
            assert torch.equal(value, evaluator.seen[4][name]), name
    assert [p.name for p in (tmp_path / "ckpt").glob("best-step-*.pt")] == ["best-step-0000004.pt"]


def test_training_stops_after_patience_evaluations_without_improvement():
    evaluator = Scripted({0: 0.6, 2: 0.2, 4: 0.3, 6: 0.25, 8: 0.0})
    _, result = _run(None, evaluator, patience=2)  # snapshots in memory
    assert result.steps == 6 and "did not improve" in result.stopped_reason
    assert result.selection["chosen_step"] == 2


def test_a_resumed_run_chooses_the_same_checkpoint(tmp_path):
    rates = {0: 0.6, 2: 0.4, 4: 0.1, 6: 0.3, 8: 0.2}
    uninterrupted, _ = _run(tmp_path / "a", Scripted(rates), patience=None, checkpoint_every=2)
    calls = {"n": 0}

    def crash_before_step_seven() -> bool:
        calls["n"] += 1
        return calls["n"] == 7

    with pytest.raises(Cancelled):
        _run(
            tmp_path / "b",
            Scripted(rates),
            None,
            hooks=RunHooks(should_cancel=crash_before_step_seven),
            checkpoint_every=2,
        )
    resumed_eval = Scripted(rates)
    resumed_eval.step = 8  # the resumed run evaluates step 8 only: 0-6 come from the checkpoint
    model, result = _run(tmp_path / "b", resumed_eval, patience=None, checkpoint_every=2)
    assert result.selection["chosen_step"] == 4 and list(resumed_eval.seen) == [8]
    for name, value in uninterrupted.named_parameters():
        if value.requires_grad:
            torch.testing.assert_close(dict(model.named_parameters())[name], value, rtol=0, atol=1e-7)


def test_the_job_writes_the_chosen_checkpoint_and_says_why(tmp_path):
    from safetensors.torch import load_file

    from lethe.core.run.pipeline import run_job
    from lethe.core.spec.job import load_spec

    data = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())
    data["select"] = {"every": 2, "patience": None, "probe_examples": 4}
    data["criterion"] = {"objective": "forget_nll", "max_normal_ppl_increase": 1.0}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(data))
    for name in ("tiny_forget.jsonl", "tiny_normal.jsonl"):
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data" / name).write_text((ROOT / "examples" / "data" / name).read_text())
    summary = run_job(load_spec(tmp_path / "spec.yaml"), tmp_path / "run")
    selection = json.loads((tmp_path / "run" / "metrics.json").read_text())["selection"]
    assert selection["chosen_step"] in (2, 4, 6) and selection["reason"].startswith(
        f"step {selection['chosen_step']}"
    )
    assert [e["step"] for e in selection["evaluations"]] == [0, 2, 4, 6]
    assert "checkpoint chosen: step" in (tmp_path / "run" / "run.log").read_text()
    best = torch.load(next((tmp_path / "run" / "checkpoints" / "unlearn").glob("best-step-*.pt")))
    adapter = load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    assert len(adapter) == len(best)
    for name, value in best.items():  # peft drops the adapter name from saved keys
        assert torch.equal(adapter[name.replace(".default", "")], value), name
    assert summary.metrics["selection"]["chosen_step"] == selection["chosen_step"]


def test_a_run_that_got_worse_does_not_meet_the_criterion():
    before = {"harmful_rate": 0.6, "normal_ppl": 10.0}
    assert not meets({"harmful_rate": 0.7, "normal_ppl": 10.0}, before, CRITERION, "harmful_rate")
    assert meets({"harmful_rate": 0.5, "normal_ppl": 10.0}, before, CRITERION, "harmful_rate")
    zero = {"harmful_rate": 0.0, "normal_ppl": 10.0}
    assert meets(zero, zero, CRITERION, "harmful_rate")
    assert not meets({"harmful_rate": 0.2, "normal_ppl": 10.0}, zero, CRITERION, "harmful_rate")


def _seen_by_selection(monkeypatch, select: dict) -> dict[str, list[str]]:
    """Which prompts and pairs one evaluation during training reads, given the spec's `select`."""
    data = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())
    data["select"] = select
    data["criterion"] = {"objective": "harmful_rate", "max_over_refusal": 0.5}
    spec = parse_spec(data)
    spec = absolutise_sources(spec, ROOT / "examples")
    test_sets = EvalSets(
        harmful_prompts=[Example("t1", "TEST harmful", "")],
        benign_prompts=[Example("t2", "TEST benign", "")],
        normal=[Example("t3", "TEST q", "a")],
    )
    seen: dict[str, list[str]] = {}

    def spy(model, tokenizer, spec, fmt, judge, forget, reference_responses, sets):
        seen.update(
            harmful=[e.prompt for e in sets.harmful_prompts],
            benign=[e.prompt for e in sets.benign_prompts],
            normal=[e.prompt for e in sets.normal],
            forget=[e.prompt for e in forget],
        )
        return SimpleNamespace(metrics={"harmful_rate": 0.0})

    monkeypatch.setattr(selection_module, "evaluate", spy)
    forget = [Example("f", "TRAIN forget", "x")]
    normal = [Example("n", "TRAIN normal", "y")]
    selection_for(spec, None, object(), test_sets, split_for_selection(spec, forget, normal), None).evaluate(
        None
    )
    return seen


def test_evaluation_during_training_never_reads_the_eval_sets(monkeypatch):
    seen = _seen_by_selection(monkeypatch, {"every": 2})
    assert seen == {
        "harmful": ["TRAIN forget"],
        "benign": ["TRAIN normal"],
        "normal": ["TRAIN normal"],
        "forget": ["TRAIN forget"],
    }


def test_evaluation_during_training_reads_the_validation_sets_it_is_given(monkeypatch):
    tiny_normal = [
        json.loads(line)["prompt"]
        for line in (ROOT / "examples" / "data" / "tiny_normal.jsonl").read_text().splitlines()
    ]
    seen = _seen_by_selection(
        monkeypatch,
        {
            "every": 2,
            "harmful_prompts": {"source": "data/tiny_normal.jsonl", "schema": "prompts"},
            "normal": {"source": "data/tiny_normal.jsonl", "schema": "pairs"},
        },
    )
    assert seen["harmful"] == tiny_normal[:16] and seen["normal"] == tiny_normal[:16]
    assert seen["benign"] == ["TRAIN normal"]


@pytest.mark.parametrize(("formats", "expected"), [("train", 0.75), ("all", 0.5)])
def test_the_validation_harmful_rate_is_averaged_over_the_formats_when_asked(monkeypatch, formats, expected):
    """select.harmful_formats all: the objective is the mean of the training format's rate and each
    eval format's (0.75, 0.5, 0.25 here); train keeps the training format's alone."""
    data = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())
    data["select"] = {"every": 2, "harmful_formats": formats}
    data["criterion"] = {"objective": "harmful_rate"}
    data["eval"]["formats"] = {"qa": "Q: {prompt}\nA: {response}", "plain": "{prompt} {response}"}
    spec = absolutise_sources(parse_spec(data), ROOT / "examples")
    measured = {"harmful_rate": 0.75, "harmful_rate@qa": 0.5, "harmful_rate@plain": 0.25, "normal_ppl": 9.0}
    monkeypatch.setattr(selection_module, "evaluate", lambda *a, **k: SimpleNamespace(metrics=dict(measured)))
    sets = EvalSets(harmful_prompts=[Example("t", "TEST harmful", "")])
    forget = [Example("f", "TRAIN forget", "x")]
    split = split_for_selection(spec, forget, [Example("n", "TRAIN normal", "y")])
    metrics = selection_for(spec, None, object(), sets, split, None).evaluate(None)
    assert metrics["harmful_rate"] == pytest.approx(expected)
    assert metrics.get("harmful_rate@train", 0.75) == 0.75 and metrics["harmful_rate@qa"] == 0.5


def test_holdout_keeps_a_seeded_share_out_of_unlearning_for_validation(monkeypatch):
    """select.holdout 0.25 over 8 forget and 4 normal examples: 2 and 1 held out, disjoint from
    what unlearning trains on, the same draw every time (a resumed run must draw the same)."""
    data = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())
    data["select"] = {"every": 2, "holdout": 0.25}
    data["criterion"] = {"objective": "harmful_rate", "max_over_refusal": 0.5}
    spec = parse_spec(data)
    forget = [Example(f"f{i}", f"forget {i}", "x") for i in range(8)]
    normal = [Example(f"n{i}", f"normal {i}", "y") for i in range(4)]
    split = split_for_selection(spec, forget, normal)
    assert (len(split.forget), len(split.held_forget), len(split.normal), len(split.held_normal)) == (
        6,
        2,
        3,
        1,
    )
    assert not {e.id for e in split.forget} & {e.id for e in split.held_forget}
    assert sorted(split.forget + split.held_forget, key=lambda e: int(e.id[1:])) == forget
    assert split == split_for_selection(spec, forget, normal)
    assert split_for_selection(spec.model_copy(update={"seed": 5}), forget, normal) != split
    seen: dict[str, list[str]] = {}

    def spy(model, tokenizer, spec, fmt, judge, forget, reference_responses, sets):
        seen.update(
            harmful=[e.prompt for e in sets.harmful_prompts],
            benign=[e.prompt for e in sets.benign_prompts],
            forget=[e.prompt for e in forget],
        )
        return SimpleNamespace(metrics={"harmful_rate": 0.0})

    monkeypatch.setattr(selection_module, "evaluate", spy)
    selection_for(spec, None, object(), EvalSets(), split, None).evaluate(None)
    held = [e.prompt for e in split.held_forget]
    assert seen == {"harmful": held, "benign": [e.prompt for e in split.held_normal], "forget": held}


def test_no_holdout_trains_on_everything():
    assert hold_out([Example("a", "p", "r"), Example("b", "q", "s")], 0.0, 0) == (
        [Example("a", "p", "r"), Example("b", "q", "s")],
        [],
    )
    assert hold_out([Example("a", "p", "r")], 0.5, 0) == ([Example("a", "p", "r")], [])


def test_selection_validates_perplexity_on_gold_pairs_the_evaluation_does_not_read():
    from lethe.core.run.unlearn_stage import validation_sets
    from lethe.core.spec.options import SelectSpec

    gold = [Example(f"g{i}", f"q{i}", f"gold answer {i}") for i in range(10)]
    own = [Example(f"n{i}", f"p{i}", f"the model's own answer {i}") for i in range(4)]
    forget = [Example("f0", "harmful?", "sure")]
    chosen = validation_sets(SelectSpec(), EvalSets(normal=gold), forget, own, eval_cap=6)
    assert chosen.normal == gold[6:]  # past the rows the final evaluation reads
    short = validation_sets(SelectSpec(), EvalSets(normal=gold), forget, own, eval_cap=10)
    assert short.normal == own  # no gold rows left: the training data, with a warning
    assert [e.prompt for e in chosen.harmful_prompts] == ["harmful?"]
