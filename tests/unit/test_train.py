"""The training loop on a tiny model built in code (seconds, CPU, deterministic): resuming, early
stopping, progress, retention bounds. The contracts every method must meet (gradients, reference,
padding, batch × accumulation, seeding, cached reference) are one table: test_methods_contract.py."""

from __future__ import annotations

import copy

import pytest
import torch
from toy_data import FMT, FORGET, NORMAL

from lethe.core.data.tokens import collate, encode, pad_id_of
from lethe.core.methods import GradDiffStage, YaoStage, finetune_terms, terms_for
from lethe.core.models.loading import load_model
from lethe.core.models.lora import attach_lora
from lethe.core.models.reference import Reference
from lethe.core.spec.fields import LoraSpec, ModelSpec, TrainConfig
from lethe.core.training.engine import Cancelled, RunHooks, Stage, StageData, run_stage


def _stage_config(**train: object) -> dict:
    ref = {"source": "unused.jsonl"}
    return {"forget": ref, "normal": ref, "train": {"lr": 5e-3, "steps": 4, "batch_size": 2, **train}}


def yao_stage(**train: object) -> YaoStage:
    return YaoStage(**_stage_config(**train))


def fresh_model(lora: bool = True):
    model, tok = load_model(ModelSpec(name="tiny-llama", device="cpu"))
    if lora:
        model = attach_lora(model, LoraSpec(rank=4, alpha=8))
    return model, tok


def make_stage(method, tmp_path=None, **overrides) -> Stage:
    data = StageData(forget=FORGET, normal=NORMAL)
    ckpt = tmp_path / "ckpt" if tmp_path else None
    return Stage(
        "unlearn", terms_for(method), data, method.train, FMT, seed=3, checkpoint_dir=ckpt, **overrides
    )


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path):
    method = yao_stage(steps=6, checkpoint_every=2)
    model, tok = fresh_model()
    run_stage(model, tok, make_stage(method), reference=Reference(model))
    uninterrupted = trainable(model)

    model, tok = fresh_model()
    calls = {"n": 0}

    def crash_after_five() -> bool:  # cancelled before step 6: the last checkpoint is step 4
        calls["n"] += 1
        return calls["n"] > 5

    with pytest.raises(Cancelled):
        run_stage(
            model,
            tok,
            make_stage(method, tmp_path),
            RunHooks(should_cancel=crash_after_five),
            Reference(model),
        )
    model, tok = fresh_model()  # a new process: fresh weights, resumed from disk
    result = run_stage(model, tok, make_stage(method, tmp_path), reference=Reference(model))
    assert result.steps == 6 and [row["step"] for row in result.log] == [1, 2, 3, 4, 5, 6]
    for name, value in trainable(model).items():
        torch.testing.assert_close(value, uninterrupted[name], rtol=0, atol=1e-7)


def _mean_nll(model, tok, examples) -> float:
    from lethe.core.methods.losses import sequence_nll, token_logprobs

    batch = collate([encode(tok, e.prompt, e.response, FMT) for e in examples], pad_id_of(tok))
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return float(sequence_nll(*token_logprobs(logits, batch["labels"])).mean())


@pytest.mark.parametrize(
    "method",
    [
        YaoStage(**_stage_config(steps=16, batch_size=4, lr=3e-3), normal_weight=3.0),
        GradDiffStage(**_stage_config(steps=16, batch_size=4, lr=3e-3)),
    ],
    ids=["yao", "graddiff"],
)
def test_forget_nll_rises_and_normal_nll_stays_close(method, knowing_base):
    base, tok = knowing_base
    model = attach_lora(copy.deepcopy(base), LoraSpec(rank=4, alpha=8))
    forget_before, normal_before = _mean_nll(model, tok, FORGET), _mean_nll(model, tok, NORMAL)
    run_stage(model, tok, make_stage(method), reference=Reference(model))
    # stated bound: the forget answers' NLL rises by at least 0.5 nats while the normal answers'
    # NLL moves by at most 12% (measured: yao +0.61 nats / +9.5%, graddiff +1.0 nats / +8.6%)
    assert _mean_nll(model, tok, FORGET) > forget_before + 0.5
    assert abs(_mean_nll(model, tok, NORMAL) - normal_before) <= 0.12 * normal_before


def test_finetuning_lowers_the_nll():
    model, tok = fresh_model(lora=False)
    model.requires_grad_(True)
    before = _mean_nll(model, tok, FORGET)
    stage = Stage(
        "finetune", finetune_terms(), StageData(forget=FORGET), TrainConfig(lr=3e-3, steps=10), FMT, seed=0
    )
    run_stage(model, tok, stage)
    assert _mean_nll(model, tok, FORGET) < before - 0.5


def test_early_stop_when_forget_nll_passes_the_threshold(knowing_base):
    base, tok = knowing_base
    model = attach_lora(copy.deepcopy(base), LoraSpec(rank=4, alpha=8))
    start = _mean_nll(model, tok, FORGET)
    result = run_stage(
        model,
        tok,
        make_stage(yao_stage(steps=50, lr=1e-2, stop_forget_nll=start + 0.3)),
        reference=Reference(model),
    )
    assert result.steps < 50
    assert "reached stop_forget_nll" in result.stopped_reason
    assert result.log[-1]["forget_nll"] >= start + 0.3


def test_progress_reports_each_term_and_an_eta():
    seen = []
    model, tok = fresh_model()
    run_stage(model, tok, make_stage(yao_stage(steps=3)), RunHooks(on_progress=seen.append), Reference(model))
    assert [p.step for p in seen] == [1, 2, 3] and all(p.total == 3 for p in seen)
    assert {"forget", "random", "normal_kl", "loss"} <= set(seen[0].losses)
    assert seen[0].eta_s is not None and seen[-1].eta_s == 0


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_sam_takes_the_forget_gradient_at_shifted_weights_and_restores_them(knowing_base):
    """Sharpness-aware unlearning: the step leaves the weights where they were (only gradients are
    filled); the forget gradient differs from the plain one and tends to it as rho goes to 0; the
    retain term's gradient is the plain one."""
    from lethe.core.training.engine import optimizer_step

    base, tok = knowing_base
    model = attach_lora(copy.deepcopy(base), LoraSpec(rank=4, alpha=8))
    with torch.no_grad():  # a trained adapter: at B = 0 the LoRA gradient is degenerate
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    reference = Reference(model)
    weights = trainable(model)

    def grads_with(rho: float, terms_of=None) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        stage = make_stage(yao_stage(sam_rho=rho))
        if terms_of is not None:
            stage.terms = [t for t in stage.terms if terms_of(t)]
        optimizer_step(model, tok, reference, stage, step=0)
        return _grads(model)

    plain, sam, tiny = grads_with(0.0), grads_with(0.5), grads_with(1e-5)
    for name, value in trainable(model).items():
        assert torch.equal(value, weights[name]), name  # restored exactly
    gap = sum(float((sam[n] - plain[n]).norm()) for n in plain)
    assert gap > 1e-3 * sum(float(plain[n].norm()) for n in plain)
    # packed apart from the retain rows, the forget rows' float sums differ in the last digits
    scale = max(float(plain[n].abs().max()) for n in plain)
    assert max(float((tiny[n] - plain[n]).abs().max()) for n in plain) < 1e-3 * scale
    retain_plain = grads_with(0.0, lambda t: t.rows == "normal")
    retain_sam = grads_with(0.5, lambda t: t.rows == "normal")
    assert all(torch.allclose(retain_sam[n], retain_plain[n]) for n in plain)


def test_sam_unlearning_raises_the_forget_nll(knowing_base):
    base, tok = knowing_base
    model = attach_lora(copy.deepcopy(base), LoraSpec(rank=4, alpha=8))
    before = _mean_nll(model, tok, FORGET)
    method = YaoStage(**_stage_config(steps=16, batch_size=4, lr=3e-3, sam_rho=0.05), normal_weight=3.0)
    run_stage(model, tok, make_stage(method), reference=Reference(model))
    # the worst case nearby is harder to push up: measured +0.29 nats (plain yao: +0.61)
    assert _mean_nll(model, tok, FORGET) > before + 0.2
