"""The whole job on examples/tiny.yaml: the run folder, resuming, and the adapter with peft alone."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from lethe.core.run.folder import RunFolderError
from lethe.core.run.pipeline import run_job
from lethe.core.spec.job import load_spec, parse_spec
from lethe.core.training.engine import Cancelled, RunHooks

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "examples" / "tiny.yaml"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "tiny"
    stages, progress = [], []
    summary = run_job(load_spec(TINY), out, RunHooks(on_stage=stages.append, on_progress=progress.append))
    return summary, stages, progress


def test_run_folder_is_self_describing(tiny_run):
    summary, stages, progress = tiny_run
    out = summary.out_dir
    for name in (
        "spec.yaml",
        "env.json",
        "train_log.jsonl",
        "metrics.json",
        "run.log",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
    ):
        assert (out / name).exists(), name
    assert parse_spec(yaml.safe_load((out / "spec.yaml").read_text())) == load_spec(TINY)
    env = json.loads((out / "env.json").read_text())
    assert env["seed"] == 0 and env["versions"]["torch"]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    unlearn = [row for row in log if row["stage"] == "unlearn"]
    assert [row["step"] for row in log if row["stage"] == "finetune"] == list(range(1, 61))
    assert [row["step"] for row in unlearn] == [1, 2, 3, 4, 5, 6]
    assert {"forget", "random", "normal_kl", "loss", "lr", "forget_nll"} <= set(unlearn[0])
    assert stages[0] == "loading" and stages[-1] == "done"
    assert stages.index("finetune") < stages.index("unlearn")
    assert [p.step for p in progress if p.stage == "unlearn"] == [1, 2, 3, 4, 5, 6]


def test_the_tiny_example_learns_its_forget_pairs_then_forgets_them(tiny_run):
    """The smoke test shows forgetting in the right direction: the fine-tune lowers the forget set's
    NLL, unlearning raises it again, and the normal set's perplexity does not blow up."""
    out = tiny_run[0].out_dir
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    tuned = [row["nll"] for row in log if row["stage"] == "finetune"]
    metrics = json.loads((out / "metrics.json").read_text())
    before, after = metrics["before"], metrics["after"]
    assert tuned[-1] < tuned[0] - 0.3  # learned: the forget pairs became more likely
    assert before["forget_nll"] < tuned[0] - 0.3  # "before" is the fine-tuned model
    assert after["forget_nll"] > before["forget_nll"] + 0.1  # forgotten: less likely again
    assert after["normal_ppl"] < before["normal_ppl"] * 1.1  # kept


def test_every_stage_reports_progress_not_only_training(tiny_run):
    """Evaluation before and after report examples done of a planned total, with an ETA."""
    progress = tiny_run[2]
    for stage in ("eval_before", "eval_after"):
        seen = [p for p in progress if p.stage == stage]
        assert seen and all(p.unit == "example" for p in seen), stage
        assert [p.step for p in seen] == sorted(p.step for p in seen)  # it only moves forward
        assert seen[-1].step == seen[-1].total > 0 and seen[-1].eta_s == 0
    assert all(p.unit == "step" for p in progress if p.stage in ("finetune", "unlearn"))


def test_metrics_have_before_after_and_per_example_results(tiny_run):
    metrics = json.loads((tiny_run[0].out_dir / "metrics.json").read_text())
    for key in ("forget_nll", "normal_ppl", "harmful_rate", "over_refusal"):
        assert key in metrics["before"] and key in metrics["after"], key
    assert "benign_similarity" in metrics["after"]
    rows = metrics["per_example"]["after"]["harmful_prompts"]
    assert rows and {"id", "prompt", "response", "harmful"} <= set(rows[0])
    assert metrics["training"]["steps"] == 6


def test_adapter_names_its_base_and_model_json_records_its_config(tiny_run):
    """A built-in has no checkpoint folder or hub id of its own: the adapter names it by the spec's
    reference (not null, not a cache folder of this machine), and model.json keeps its config."""
    out = tiny_run[0].out_dir
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "tiny-llama"
    card = json.loads((out / "model.json").read_text())
    assert card["reference"] == "tiny-llama"
    assert card["config"]["model_type"] == "llama" and card["config"]["hidden_size"] == 64


def test_adapter_loads_with_peft_alone_and_reproduces_the_run(tiny_run, tmp_path):
    """Save the tiny base model as a plain checkpoint, then in a process that imports no Lethe
    code, apply the adapter with peft and regenerate the run's after-unlearning responses."""
    from lethe.core.models.tiny import build_tiny

    base, tokenizer = build_tiny("tiny-llama")
    base.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    out = tiny_run[0].out_dir
    rows = json.loads((out / "metrics.json").read_text())["per_example"]["after"]["harmful_prompts"]
    script = textwrap.dedent(f"""
        import json, sys, torch, peft, transformers
        tok = transformers.AutoTokenizer.from_pretrained({str(tmp_path / "base")!r})
        model = transformers.AutoModelForCausalLM.from_pretrained({str(tmp_path / "base")!r})
        model = peft.PeftModel.from_pretrained(model, {str(out / "adapter")!r}).eval()
        assert "lethe" not in sys.modules
        outs = []
        for prompt in json.loads(sys.stdin.read()):
            ids = tok("### Question: " + prompt + "\\n### Answer:", return_tensors="pt")
            new = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
            outs.append(tok.decode(new[0, ids.input_ids.shape[1]:], skip_special_tokens=True).strip())
        print(json.dumps(outs))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps([r["prompt"] for r in rows]),
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [r["response"] for r in rows]


def test_resume_after_an_interruption_gives_the_same_adapter(tiny_run, tmp_path):
    from safetensors.torch import load_file

    spec = load_spec(TINY)
    spec.unlearn.train.checkpoint_every = 2
    calls = {"n": 0}

    def stop_at_step_five() -> bool:  # polled once before each step (and between stages)
        calls["n"] += 1
        return calls["n"] == 7

    with pytest.raises(Cancelled):
        run_job(spec, tmp_path / "run", RunHooks(should_cancel=stop_at_step_five))
    assert not (tmp_path / "run" / "metrics.json").exists()
    resumed = run_job(spec, tmp_path / "run")
    assert resumed.metrics["training"]["steps"] == 6
    expected = load_file(tiny_run[0].out_dir / "adapter" / "adapter_model.safetensors")
    got = load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    for name, value in expected.items():
        assert (got[name] - value).abs().max().item() < 1e-6, name


def test_a_folder_of_another_spec_is_refused(tiny_run):
    spec = load_spec(TINY)
    spec.seed = 7
    with pytest.raises(RunFolderError, match="different spec"):
        run_job(spec, tiny_run[0].out_dir)


def _self_answered_spec() -> dict:
    spec = load_spec(TINY).model_dump(mode="json", by_alias=True)
    for kind in ("forget", "normal"):
        spec["unlearn"][kind]["schema"] = "prompts"
        spec["unlearn"][f"{kind}_answers_from"] = "model"
    spec["unlearn"]["answer_generation"] = {"max_new_tokens": 12}
    spec["unlearn"]["train"]["steps"] = 2
    return spec


def test_answers_written_by_the_model_are_filtered_cached_and_used(tmp_path, monkeypatch):
    """forget/normal_answers_from: model. A random tiny model writes byte gibberish, so its
    generation is replaced by a stand-in (named so) that answers in three ways: a refusal and a
    degenerate loop are dropped, real answers are kept, cached in the run folder and trained on."""
    from lethe.core.run import pipeline
    from lethe.core.spec.job import parse_spec

    def stand_in_generate(model, tokenizer, prompts, template, gen, on_batch=None):
        styles = [
            "I'm sorry, I can't help with that.",
            "ha ha ha ha ha ha ha ha",
            "First you gather the parts, then you assemble them carefully.",
        ]
        return [styles[i % 3] for i in range(len(prompts))]

    monkeypatch.setattr(pipeline, "generate", stand_in_generate)
    summary = run_job(parse_spec(_self_answered_spec()), tmp_path / "run")
    for name in ("forget_generated.jsonl", "normal_generated.jsonl"):
        rows = [json.loads(line) for line in (tmp_path / "run" / name).read_text().splitlines()]
        assert rows and {row["response"] for row in rows} == {
            "First you gather the parts, then you assemble them carefully."
        }
    assert summary.metrics["training"]["steps"] == 2


def test_after_a_fine_tuning_stage_the_probes_original_is_the_fine_tuned_model(tmp_path):
    # the copyright case under LoRA: "original" must be the model that learned the text (what
    # unlearning starts from), not the adapter-disabled base model that never saw it
    data = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())
    data["finetune"] = {
        "data": {"source": "data/tiny_forget.jsonl", "schema": "pairs"},
        "train": {"lr": 0.02, "steps": 12, "batch_size": 4},
    }
    data["unlearn"] = {
        "method": "npo",
        "forget": data["unlearn"]["forget"],
        "normal": data["unlearn"]["normal"],
        "train": {"lr": 0.005, "steps": 2, "batch_size": 2},
    }
    data["eval"]["max_examples"] = 8
    data["probes"] = {"relearn": None, "rephrase": None, "quantize": {"bits": [8]}, "max_examples": 8}
    spec = parse_spec(data)
    from lethe.core.spec.job import absolutise_sources

    spec = absolutise_sources(spec, ROOT / "examples")
    metrics = run_job(spec, tmp_path / "run").metrics
    original = metrics["probes"]["quantize"]["original"]["forget_nll"]
    assert original == pytest.approx(metrics["before"]["forget_nll"], rel=1e-4)
    tuned = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    tuned = [row["nll"] for row in tuned if row["stage"] == "finetune"]
    assert tuned[-1] < tuned[0] - 0.2  # the fine-tune moved the model away from the base model


def test_a_weak_judge_is_flagged_in_the_metrics(tiny_run):
    metrics = json.loads((tiny_run[0].out_dir / "metrics.json").read_text())
    judge = metrics["judge"]  # tiny.yaml judges by refusal phrases: weak on the check set
    assert judge["kind"] == "refusal" and {"compliant_model", "benign", "refusal"} <= set(judge["per_kind"])
    assert judge["per_kind"]["benign"]["accuracy"] < 0.85
    assert "benign 0.00" in judge["judge_warning"]
    assert metrics["judge_warning"] == judge["judge_warning"]  # also at the top, where it is seen


def test_the_judge_pairs_are_the_answered_prompts_and_the_refusals():
    from lethe.core.data.examples import Example
    from lethe.core.run.pipeline import _judge_pairs

    forget = [Example("f0", "how to x", "do x"), Example("f1", "how to y", "")]
    normal = [Example("n0", "how do i bake", "mix and bake")]
    pairs = _judge_pairs(forget, normal)
    assert pairs.harmful == [("how to x", "do x")] and pairs.harmless == [("how do i bake", "mix and bake")]
    assert len(pairs.refusals) > 50 and "I can't help with that." in pairs.refusals
