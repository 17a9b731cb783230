"""One contract table over every method in METHODS (tiny model built in code, CPU, seconds).

Every method must: give a finite loss; put gradients only on trainable parameters; leave the
reference untouched; raise the forget NLL of a model that knows the forget set (RMU: move the
forget activations toward c·u); train identically twice from one seed; ignore padding; give the
same gradient for batch × accumulation splits; and, where it reads the reference, give the same
loss from cached reference outputs as from live ones. Each loss's values by hand: test_losses.py.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from toy_data import FMT, FORGET, NORMAL

from lethe.core.data.tokens import collate, encode, pad_id_of
from lethe.core.methods import METHODS, losses, terms_for
from lethe.core.methods.targets import steering_vector
from lethe.core.models.hidden import forward as layer_forward
from lethe.core.models.hidden import resolve_layer
from lethe.core.models.loading import load_model
from lethe.core.models.lora import attach_lora
from lethe.core.models.reference import Reference
from lethe.core.spec.fields import LoraSpec, ModelSpec
from lethe.core.training.engine import Stage, StageData, optimizer_step, prepare_reference, run_stage
from lethe.core.training.rows import encode_rows, micro_batch_rows, row_kinds
from lethe.core.training.step import micro_batch_loss

REFUSALS = [
    "I can't help with that.",
    "Sorry, I won't answer that.",
    "I am unable to assist with this request.",
]
ALL = list(METHODS)
WITH_REFERENCE = [
    m
    for m in ALL
    if any(
        t.needs_reference
        for t in terms_for(
            METHODS[m].stage(forget={"source": "x"}, normal={"source": "x"}, train={"steps": 1})
        )
    )
]

# Per-method settings for the "it forgets" test (16 steps, batch 4, lr 3e-3 unless set here): paper
# defaults where they work at this scale. SimNPO's β = 4.5 saturates once the forget NLL is near
# 1/β (its weight σ(-β·NLL) vanishes), RMU's c = 20 is sized for 7B activation norms: both are
# rescaled, as docs/methods.md says they must be per model. Measured effects are in the docs.
FORGETS: dict[str, tuple[dict, dict]] = {
    "simnpo": ({"forget_weight": 1.0, "beta": 0.5}, {}),
    "idk": ({}, {"lr": 1e-2}),
    "rmu": ({"steering_coeff": 4.0, "retain_weight": 1.0}, {"lr": 1e-2}),
}


def method_stage(name: str, tuned: bool = False, **train: object):
    ref = {"source": "unused.jsonl"}
    params, tuned_train = FORGETS.get(name, ({}, {})) if tuned else ({}, {})
    return METHODS[name].stage(
        forget=ref,
        normal=ref,
        **params,
        train={"lr": 5e-3, "steps": 4, "batch_size": 2, **train, **tuned_train},
    )


def stage_of(method, seed: int = 3) -> Stage:
    data = StageData(forget=FORGET, normal=NORMAL, refusals=REFUSALS)
    return Stage("unlearn", terms_for(method), data, method.train, FMT, seed=seed)


def fresh_model(lora: bool = True):
    model, tok = load_model(ModelSpec(name="tiny-llama", device="cpu"))
    if lora:
        return attach_lora(model, LoraSpec(rank=4, alpha=8)), tok
    return model.requires_grad_(True), tok


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def grads(model) -> dict[str, torch.Tensor | None]:
    return {
        n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters() if p.requires_grad
    }


def reads_logits(name: str) -> bool:
    return all(t.reads == "logits" for t in terms_for(method_stage(name)))


@pytest.mark.parametrize("name", ALL)
def test_finite_loss_and_gradients_only_on_trainable_parameters(name):
    model, tok = fresh_model()
    stage = stage_of(method_stage(name))
    values = optimizer_step(model, tok, Reference(model), stage, step=0)
    assert all(torch.isfinite(torch.tensor(v)) for v in values.values()), values
    got = [p for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert got and all(torch.isfinite(p.grad).all() for p in got)
    assert any(p.grad.abs().sum() > 0 for p in got)
    for pname, param in model.named_parameters():
        if not param.requires_grad:
            assert param.grad is None, pname
        elif reads_logits(name):  # RMU stops at its layer: adapters above it get no gradient
            assert param.grad is not None, pname


@pytest.mark.parametrize("name", ALL)
def test_the_reference_is_untouched_by_training(name):
    base, tok = load_model(ModelSpec(name="tiny-llama", device="cpu"))
    untouched = copy.deepcopy(base)
    model = attach_lora(base, LoraSpec(rank=4, alpha=8))
    run_stage(model, tok, stage_of(method_stage(name, steps=2)), reference=Reference(model))
    batch = collate([encode(tok, e.prompt, e.response, FMT) for e in FORGET[:3]], pad_id_of(tok))
    with torch.no_grad():
        expected = untouched(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        trained = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(Reference(model).logits(batch["input_ids"], batch["attention_mask"]), expected)
    assert not torch.equal(trained, expected)  # while the adapter did move the trained model


@pytest.mark.parametrize("name", WITH_REFERENCE)
def test_the_frozen_copy_is_untouched_under_full_finetuning(name):
    model, tok = fresh_model(lora=False)
    reference = Reference(model)
    before = {n: p.clone() for n, p in reference.module.named_parameters()}
    run_stage(model, tok, stage_of(method_stage(name, steps=2)), reference=reference)
    for pname, value in reference.module.named_parameters():
        assert torch.equal(value, before[pname]), pname


@pytest.mark.parametrize("name", ALL)
def test_two_seeded_runs_are_identical(name):
    finals = []
    for _ in range(2):
        model, tok = fresh_model()
        run_stage(model, tok, stage_of(method_stage(name, steps=3)), reference=Reference(model))
        finals.append(trainable(model))
    for pname, value in finals[0].items():
        assert torch.equal(value, finals[1][pname]), pname


def _packed(tok, name: str, extra_row: bool):
    terms = terms_for(method_stage(name))
    rows = micro_batch_rows(StageData(FORGET, NORMAL, refusals=REFUSALS), row_kinds(terms), 0, 2, seed=1)
    encoded, slices, keys = encode_rows(tok, FMT, rows)
    if extra_row:  # pad every row to a much longer row's width, then drop that row
        encoded = encoded + [encode(tok, "a much longer prompt " * 4, "and a longer answer too " * 3, FMT)]
    batch = collate(encoded, pad_id_of(tok))
    return terms, {k: v[: slices[list(slices)[-1]].stop] for k, v in batch.items()}, slices, keys


@pytest.mark.parametrize("name", ALL)
def test_padding_does_not_change_the_loss(name):
    model, tok = fresh_model()
    reference = Reference(model)
    values = []
    for extra in (False, True):
        terms, batch, slices, keys = _packed(tok, name, extra)
        values.append(micro_batch_loss(model, reference, terms, batch, slices, keys)[1])
    assert values[1].keys() == values[0].keys()
    for key, value in values[0].items():
        assert values[1][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


@pytest.mark.parametrize("name", ALL)
def test_batch_times_accumulation_gives_the_same_gradient(name):
    model, tok = fresh_model()
    reference = Reference(model)
    found = []
    for batch, accum in ((4, 1), (2, 2), (1, 4)):
        model.zero_grad()
        optimizer_step(
            model, tok, reference, stage_of(method_stage(name, batch_size=batch, grad_accum=accum)), 0
        )
        found.append(grads(model))
    for other in found[1:]:
        for pname, grad in found[0].items():
            if grad is None:
                assert other[pname] is None, pname
            else:
                torch.testing.assert_close(other[pname], grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", WITH_REFERENCE)
@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_cached_reference_gives_the_same_loss_and_gradient_as_live(name, lora):
    model, tok = fresh_model(lora)
    method = method_stage(name, steps=3, grad_accum=2, cache_reference=False)
    stage = stage_of(method)
    live = prepare_reference(model, tok, stage, Reference(model), total=3)
    assert type(live).__name__ == "LiveReference"
    cached = prepare_reference(
        model,
        tok,
        stage_of(
            method.model_copy(update={"train": method.train.model_copy(update={"cache_reference": True})})
        ),
        Reference(model),
        total=3,
    )
    assert type(cached).__name__ == "CachedReference"
    for step in range(3):
        model.zero_grad()
        from_live, live_grads = optimizer_step(model, tok, live, stage, step), grads(model)
        model.zero_grad()
        from_cache, cache_grads = optimizer_step(model, tok, cached, stage, step), grads(model)
        assert from_cache == pytest.approx(from_live, rel=1e-5, abs=1e-6)
        for pname, grad in live_grads.items():
            if grad is not None:
                torch.testing.assert_close(cache_grads[pname], grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["npo", "idk"])
def test_the_kl_retain_variant_reads_the_reference_and_caches_it(name):
    """`retain_loss: kl` swaps the retain NLL for the forward KL to the original on normal rows."""
    ref = {"source": "unused.jsonl"}
    method = METHODS[name].stage(
        forget=ref, normal=ref, retain_loss="kl", train={"lr": 5e-3, "steps": 2, "batch_size": 2}
    )
    terms = terms_for(method)
    assert [(t.name, t.reference) for t in terms if t.rows == "normal"] == [("normal_kl", "logits")]
    model, tok = fresh_model()
    stage = stage_of(method)
    live = optimizer_step(model, tok, Reference(model), stage, 0)
    assert live["normal_kl"] == pytest.approx(0.0, abs=1e-6)  # an untrained adapter is the original
    cached = prepare_reference(
        model,
        tok,
        stage_of(
            method.model_copy(update={"train": method.train.model_copy(update={"cache_reference": True})})
        ),
        Reference(model),
        total=2,
    )
    model.zero_grad()
    assert optimizer_step(model, tok, cached, stage, 1) == pytest.approx(
        optimizer_step(model, tok, Reference(model), stage, 1), rel=1e-5, abs=1e-6
    )


@pytest.mark.parametrize(
    ("name", "steps", "expected"),
    [
        ("npo", 40, "CachedReference"),  # log-probs only, 80 row visits of 8 forget rows
        ("npo", 1, "LiveReference"),  # 2 visits, 2 distinct rows: a cache would save nothing
        ("yao", 40, "LiveReference"),  # the KL reads logits: vocabulary-sized memory per position
        ("rmu", 40, "LiveReference"),  # activations: width-sized memory per position
    ],
)
def test_cache_reference_auto_caches_small_outputs_that_are_read_more_than_once(name, steps, expected):
    model, tok = fresh_model()
    method = method_stage(name, steps=steps)
    assert method.train.cache_reference == "auto"  # the default
    source = prepare_reference(model, tok, stage_of(method), Reference(model), total=steps)
    assert type(source).__name__ == expected


def test_a_cached_step_runs_no_reference_forward():
    model, tok = fresh_model()
    method = method_stage("yao", cache_reference=True)
    cached = prepare_reference(model, tok, stage_of(method), Reference(model), total=4)
    calls = []
    hook = model.base_model.model.model.embed_tokens.register_forward_hook(lambda *a: calls.append(1))
    optimizer_step(model, tok, cached, stage_of(method), step=1)
    cached_calls = len(calls)
    optimizer_step(model, tok, Reference(model), stage_of(method), step=1)
    hook.remove()
    # the trained model's own forwards only: forget and random rows packed by prompt, normal rows;
    # live, the same plus the reference's over the normal rows
    assert cached_calls == 2 and len(calls) - cached_calls == cached_calls + 1


# ------------------------------------------------------------------ it forgets
def _mean_nll(model, tok, examples) -> float:
    batch = collate([encode(tok, e.prompt, e.response, FMT) for e in examples], pad_id_of(tok))
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return float(losses.sequence_nll(*losses.token_logprobs(logits, batch["labels"])).mean())


def _distance_to_target(model, tok, method) -> float:
    """Mean RMS distance of the forget rows' layer-ℓ activations to c·u (RMU's forget term)."""
    batch = collate([encode(tok, e.prompt, e.response, FMT) for e in FORGET], pad_id_of(tok))
    layer = resolve_layer(model, method.layer)
    with torch.no_grad():
        _, hidden = layer_forward(
            lambda i, a: model(input_ids=i, attention_mask=a).logits,
            model,
            batch["input_ids"],
            batch["attention_mask"],
            layer,
            need_logits=False,
        )
    target = method.steering_coeff * steering_vector(hidden.shape[-1], method.vector_seed)
    return float(losses.activation_mse(hidden, target, batch["attention_mask"].bool()).mean().sqrt())


@pytest.mark.parametrize("name", ALL)
def test_forgetting_happens_on_a_model_that_knows_the_forget_set(name, knowing_base):
    base, tok = knowing_base
    model = attach_lora(copy.deepcopy(base), LoraSpec(rank=4, alpha=8))
    method = method_stage(name, tuned=True, steps=16, batch_size=4, lr=3e-3)
    if name == "rmu":
        before = _distance_to_target(model, tok, method)
        run_stage(model, tok, stage_of(method), reference=Reference(model))
        assert _distance_to_target(model, tok, method) < 0.8 * before  # measured: see docs/methods.md
        return
    before = _mean_nll(model, tok, FORGET)
    run_stage(model, tok, stage_of(method), reference=Reference(model))
    assert _mean_nll(model, tok, FORGET) > before + 0.5  # stated bound: +0.5 nats at least


# ------------------------------------------------------------------ the table's other columns
# the loss each method's forget term is built on, and its test against hand-computed values
HAND_CHECKED = {
    "yao": "test_sequence_nll_mean_and_sum_by_hand",
    "ga": "test_sequence_nll_mean_and_sum_by_hand",
    "graddiff": "test_sequence_nll_mean_and_sum_by_hand",
    "npo": "test_npo_by_hand",
    "simnpo": "test_simnpo_by_hand",
    "idk": "test_sequence_nll_mean_and_sum_by_hand",
    "idk_dpo": "test_dpo_by_hand",
    "rmu": "test_activation_mse_by_hand_and_in_fp32",
    "undial": "test_undial_by_hand",
}


def test_every_methods_loss_is_checked_against_values_by_hand():
    import test_losses

    assert set(HAND_CHECKED) == set(METHODS)
    for name, test in HAND_CHECKED.items():
        assert callable(getattr(test_losses, test, None)), f"{name}: {test} missing from test_losses.py"


@pytest.mark.parametrize("name", ALL)
def test_the_tiny_example_runs_to_completion_with_every_method(name, tmp_path):
    import yaml

    from lethe.core.run.pipeline import run_job
    from lethe.core.spec.job import absolutise_sources, parse_spec

    examples = Path(__file__).resolve().parents[2] / "examples"
    data = yaml.safe_load((examples / "tiny.yaml").read_text())
    data["unlearn"]["method"] = name
    spec = parse_spec(data)
    spec = absolutise_sources(spec, examples)
    summary = run_job(spec, tmp_path / name)
    assert summary.metrics["training"]["steps"] == 6 and summary.stopped_reason == "max_steps"
    assert (tmp_path / name / "adapter" / "adapter_model.safetensors").exists()
