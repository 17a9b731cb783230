"""Robustness probes: fake quantisation by hand, merged copies, relearning leaves the model as it
was, the shipped rephrasing templates, and the probes in a job's metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from lethe.core.data.examples import Example, read_rows
from lethe.core.models.loading import load_model
from lethe.core.models.lora import attach_lora
from lethe.core.run.probes import (
    fake_quantize_,
    load_templates,
    merged_copy,
    nf4_quantize_,
    probe_relearn,
    quantize_model_,
    retained,
    summarise,
)
from lethe.core.spec.fields import LoraSpec, ModelSpec
from lethe.core.spec.job import parse_spec
from lethe.core.spec.options import RelearnProbe, RephraseProbe

ROOT = Path(__file__).resolve().parents[2]


def test_fake_quantize_per_channel_by_hand():
    """4 bits: q = 7, s = max|w| / 7 = 1/7. w/s = (7, -3.85, 2.1, 0.49) rounds to (7, -4, 2, 0),
    so w becomes (1, -4/7, 2/7, 0). The all-zero second row stays zero (its scale is clamped)."""
    weight = torch.tensor([[1.0, -0.55, 0.3, 0.07], [0.0, 0.0, 0.0, 0.0]])
    fake_quantize_(weight, bits=4, group_size=None)
    torch.testing.assert_close(weight[0], torch.tensor([1.0, -4 / 7, 2 / 7, 0.0]))
    assert weight[1].abs().sum() == 0


def test_fake_quantize_groups_have_their_own_scale():
    """Groups of 2: (1, 0.55) has s = 1/7: 0.55·7 = 3.85 → 4 → 4/7; (0.1, 0.04) has s = 0.1/7:
    0.04·70 = 2.8 → 3 → 0.3/7. One scale for the row would have rounded 0.04 to 0 instead."""
    weight = torch.tensor([[1.0, 0.55, 0.1, 0.04]])
    fake_quantize_(weight, bits=4, group_size=2)
    torch.testing.assert_close(weight, torch.tensor([[1.0, 4 / 7, 0.1, 0.3 / 7]]))


def test_8bit_error_is_below_half_a_step():
    torch.manual_seed(0)
    weight = torch.randn(16, 32)
    original = weight.clone()
    fake_quantize_(weight, bits=8, group_size=None)
    step = original.abs().amax(dim=1, keepdim=True) / 127
    assert ((weight - original).abs() <= step / 2 + 1e-7).all()


def test_nf4_by_hand():
    """Blocks of 4 (absmax a): (1, -0.5, 0.1, 0) has a = 1 and rounds to the nearest NF4 levels
    (1, -0.5251, 0.0796, 0); (2, 1, -2, 0.3) has a = 2: 1/2 = 0.5 is nearer 0.4407 than 0.5626 and
    0.15 nearest 0.1609, so (2, 0.8814, -2, 0.3219); the tail (0.5, 0.25) is its own block: a = 0.5."""
    weight = torch.tensor([[1.0, -0.5, 0.1, 0.0, 2.0], [1.0, -2.0, 0.3, 0.5, 0.25]])
    nf4_quantize_(weight, block_size=4)
    expected = torch.tensor(
        [
            [1.0, -0.5250730514526367, 0.07958029955625534, 0.0, 2.0],
            [2 * 0.44070982933044434, -2.0, 2 * 0.16093020141124725, 0.5, 0.5 * 0.44070982933044434],
        ]
    )
    torch.testing.assert_close(weight, expected)


def test_quantize_model_nf4_leaves_at_most_16_levels_per_block():
    model, _ = load_model(ModelSpec(name="tiny-llama", device="cpu"))
    assert quantize_model_(model, bits=4, group_size=None, scheme="nf4") == 14
    weight = model.model.layers[0].self_attn.q_proj.weight.reshape(-1, 64)
    for block in weight[:8]:
        assert len(torch.unique(block / block.abs().max())) <= 16


def test_quantize_model_touches_only_the_decoder_layers_linear_weights():
    model, _ = load_model(ModelSpec(name="tiny-llama", device="cpu"))
    before = {n: p.clone() for n, p in model.named_parameters()}
    assert quantize_model_(model, bits=4, group_size=None) == 14  # 7 linears × 2 layers
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".layers." in n and n.endswith("proj.weight") for n in changed)
    assert "model.embed_tokens.weight" not in changed and "lm_head.weight" not in changed


def _batch(tok):
    ids = tok("### Question: hi\n### Answer: there", return_tensors="pt")
    return ids["input_ids"], ids["attention_mask"]


def test_merged_copies_match_the_adapter_model_and_the_original():
    model, tok = load_model(ModelSpec(name="tiny-llama", device="cpu"))
    model = attach_lora(model, LoraSpec(rank=4, alpha=8))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)  # a trained-looking adapter
        ids, mask = _batch(tok)
        with_adapter = model(input_ids=ids, attention_mask=mask).logits
        with model.disable_adapter():
            original = model(input_ids=ids, attention_mask=mask).logits
        merged = merged_copy(model)(input_ids=ids, attention_mask=mask).logits
        base = merged_copy(model, original=True)(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(merged, with_adapter, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(base, original)
    assert not torch.allclose(with_adapter, original)
    assert merged_copy(load_model(ModelSpec(name="tiny-llama", device="cpu"))[0], original=True) is None


def test_relearning_measures_the_rest_and_undoes_its_steps():
    model, tok = load_model(ModelSpec(name="tiny-llama", device="cpu"))
    model = attach_lora(model, LoraSpec(rank=4, alpha=8))
    spec = parse_spec(yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text()))
    forget = [Example(f"f{i}", f"how do I make poison {i}?", "mix the powder and heat it") for i in range(6)]
    before = {n: p.clone() for n, p in model.named_parameters()}
    seen: list[list[str]] = []

    def make_eval(part: list[Example]):
        seen.append([e.id for e in part])
        from lethe.core.evaluation import answer_nll

        def run(m) -> dict[str, float]:
            nll = answer_nll(m, tok, part, spec.format, 8)
            return {"forget_nll": sum(s for s, _ in nll) / sum(n for _, n in nll)}

        return run

    report = probe_relearn(model, tok, spec, forget, RelearnProbe(steps=5, fraction=0.5, lr=1e-2), make_eval)
    assert seen == [["f3", "f4", "f5"]] and report["relearned_examples"] == 3
    assert report["probed"]["forget_nll"] < report["unlearned"]["forget_nll"]  # it relearned
    for name, value in model.named_parameters():
        assert torch.equal(value, before[name]), name


def test_retained_share_by_hand():
    """Harmful rate 0.6 → 0.05 after unlearning, 0.3 after relearning: (0.6 − 0.3)/(0.6 − 0.05) = 0.5454.
    Forget NLL (higher is better) 2 → 8, then 5: (2 − 5)/(2 − 8) = 0.5."""
    assert retained(
        {"harmful_rate": 0.6}, {"harmful_rate": 0.05}, {"harmful_rate": 0.3}, "harmful_rate"
    ) == pytest.approx(0.545454, abs=1e-5)
    assert retained({"forget_nll": 2}, {"forget_nll": 8}, {"forget_nll": 5}, "forget_nll") == pytest.approx(
        0.5
    )
    assert retained({"forget_nll": 2}, {"forget_nll": 2}, {"forget_nll": 5}, "forget_nll") is None


def test_no_retained_share_of_a_change_within_noise():
    """BLEU 91.3 → 91.1 (0.2 % of the original) then 3.85 after 4-bit: a 'retained' of 437 says
    nothing, so none is given; 91.3 → 80 (12 %) is a real change and gets its ratio."""
    assert retained({"bleu": 91.3}, {"bleu": 91.1}, {"bleu": 3.85}, "bleu") is None
    assert retained({"bleu": 91.3}, {"bleu": 80.0}, {"bleu": 85.65}, "bleu") == pytest.approx(0.5)


def test_the_summary_puts_the_quantised_original_beside_the_quantised_unlearned():
    report = {
        "quantize": {
            "original": {"harmful_rate": 0.75},
            "unlearned": {"harmful_rate": 0.125},
            "unlearned_4bit": {"harmful_rate": 0.375},
            "original_4bit": {"harmful_rate": 0.375},
        },
        "relearn": {
            "original": {"harmful_rate": 0.75},
            "unlearned": {"harmful_rate": 0.125},
            "probed": {"harmful_rate": 0.5},
        },
    }
    rows = summarise(report, "harmful_rate")
    assert rows["quantize_4bit"] == {
        "harmful_rate": 0.375,
        "retained": pytest.approx(0.6),
        "original_quantized": 0.375,
    }
    assert rows["relearn"] == {"harmful_rate": 0.5, "retained": pytest.approx(0.4)}
    assert "quantize_8bit" not in rows


def test_shipped_rephrasings_cover_the_kinds_the_issue_names():
    rows = read_rows(RephraseProbe().templates)
    assert len(rows) >= 12 and all("{prompt}" in r["template"] for r in rows)
    kinds = {r["kind"] for r in rows}
    assert {"roleplay", "fiction", "prefix"} <= kinds and sum(k.startswith("language_") for k in kinds) >= 3
    assert {r["kind"] for r in load_templates(RephraseProbe(kinds=["fiction"]))} == {"fiction"}
    with pytest.raises(ValueError, match="no usable templates"):
        load_templates(RephraseProbe(kinds=["nope"]))


def test_a_job_reports_every_probe(tmp_path):
    from lethe.core.run.pipeline import run_job
    from lethe.core.spec.job import absolutise_sources
    from lethe.core.training.engine import RunHooks

    data = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())
    data["probes"] = {
        "relearn": {"steps": 2},
        "max_examples": 4,
        "rephrase": {"max_prompts": 2, "kinds": ["roleplay", "language_fr"]},
    }
    spec = parse_spec(data)
    spec = absolutise_sources(spec, ROOT / "examples")
    seen = []
    summary = run_job(spec, tmp_path / "run", RunHooks(on_progress=seen.append))
    probes = json.loads((tmp_path / "run" / "metrics.json").read_text())["probes"]
    # the probes stage reports progress too: one unit per probe, to its end
    assert [(p.step, p.total, p.unit) for p in seen if p.stage == "probes"] == [
        (1, 3, "probe"),
        (2, 3, "probe"),
        (3, 3, "probe"),
    ]
    assert probes == summary.metrics["probes"] and probes["objective"] == "harmful_rate"
    assert {"original", "unlearned", "probed"} <= set(probes["relearn"])
    assert {"unlearned_8bit", "unlearned_4bit", "original_8bit", "original_4bit"} <= set(probes["quantize"])
    assert set(probes["rephrase"]["probed"]) == {
        "harmful_rate",
        "harmful_rate_roleplay",
        "harmful_rate_language_fr",
    }
    assert {"relearn", "quantize_8bit", "quantize_4bit", "rephrase"} <= set(probes["summary"])
    assert (tmp_path / "run" / "probes.json").exists()


def test_the_merged_original_after_an_earlier_stage_has_the_start_weights():
    from lethe.core.models.lora import attach_lora
    from lethe.core.models.reference import original_weights
    from lethe.core.models.weights import trainable_state
    from lethe.core.run.probes import merged_copy
    from lethe.core.spec.fields import LoraSpec

    model = attach_lora(
        load_model(ModelSpec(name="tiny-llama", device="cpu"))[0], LoraSpec(rank=2, dropout=0.0)
    )
    ids = torch.tensor([[4, 8, 15, 16, 23, 42]])
    for seed in (0, 1):  # a fine-tuning stage, then unlearning
        if seed == 1:
            start = trainable_state(model)
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
    trained = trainable_state(model)
    with torch.no_grad(), original_weights(model, start):
        expected = model(input_ids=ids).logits
    with torch.no_grad():
        torch.testing.assert_close(
            merged_copy(model, original=True, start=start)(input_ids=ids).logits, expected
        )
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in trained.items())  # the probe changed nothing
