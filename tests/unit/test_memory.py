"""The memory estimate (issue 15, item 4): shapes from configurations alone, and the formula
against a hand computation on tiny-llama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lethe.core.models.errors import ModelError
from lethe.core.models.memory import GiB, Workload, estimate_memory, model_shape, shape_targets
from lethe.core.models.tiny import build_tiny
from lethe.core.spec.fields import LoraSpec, ModelSpec

# tiny-llama by hand: h 64, 2 layers, 4 heads of 16 with 2 key/value heads (k, v: 64 -> 32),
# MLP 128, vocabulary 260, untied head
EMBED = 260 * 64
ATTN = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64
MLP = 3 * 64 * 128
LINEAR = 2 * (ATTN + MLP)
PARAMS = 2 * EMBED + LINEAR + 2 * 2 * 64 + 64  # embeddings, head, linears, 2 norms per layer, final
LORA_8 = 2 * 8 * ((64 + 64) + (64 + 32) + (64 + 32) + (64 + 64))  # q, k, v, o per layer


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-opt", "tiny-gpt2"])
def test_the_shape_counts_what_the_built_model_has(name: str) -> None:
    model, _ = build_tiny(name)
    assert model_shape(name).parameters == sum(p.numel() for p in model.parameters())


def test_tiny_llama_by_hand() -> None:
    shape = model_shape("tiny-llama")
    assert (shape.parameters, shape.linear_parameters) == (PARAMS, LINEAR)
    assert shape.lora_parameters(LoraSpec(rank=8), shape_targets(shape)) == LORA_8
    rows, length = 4, 32
    e = estimate_memory(
        shape, ModelSpec(name="tiny-llama"), LoraSpec(rank=8), Workload(rows, length, False, True)
    )
    assert e.weights == PARAMS * 4 and e.trainable == LORA_8 * 16 and e.reference == 0
    assert e.activations == rows * length * 64 * 4 * 17 * 2
    assert e.logits == 2**23 * 12 + rows * length * 260 * 4
    assert e.total == e.weights + e.trainable + e.activations + e.logits + 1 * GiB


def test_quantized_full_and_checkpointed_variants_by_hand() -> None:
    shape = model_shape("tiny-llama")
    nf4 = ModelSpec(name="tiny-llama", dtype="bf16", quantize="nf4")
    e = estimate_memory(shape, nf4, LoraSpec(rank=8), Workload(1, 16, True, False))
    assert e.weights == pytest.approx(LINEAR * (0.5 + 1 / 64 + 4 / (64 * 256)) + (PARAMS - LINEAR) * 4)
    assert e.activations == 16 * 64 * 2 * (2 + 17) and e.logits == 2**23 * 12
    full = estimate_memory(
        shape, ModelSpec(name="tiny-llama", dtype="fp16"), None, Workload(1, 16, False, True)
    )
    assert (full.weights, full.trainable, full.reference) == (PARAMS * 2, 3 * PARAMS * 2, PARAMS * 2)


def test_a_local_folder_and_the_hub_cache_give_their_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = build_tiny("tiny-opt")
    model.config.save_pretrained(tmp_path / "folder")  # config.json only: no weights are read
    shape = model_shape(str(tmp_path / "folder"))
    assert shape.parameters == sum(p.numel() for p in model.parameters())
    assert shape.source.endswith("folder/config.json")
    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--lethe-test--opt" / "snapshots" / "abc"
    model.config.save_pretrained(snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cached = model_shape("lethe-test/opt")
    assert cached.parameters == shape.parameters and "hub cache" in cached.source


def test_an_unknown_architecture_is_counted_from_its_sizes(tmp_path: Path) -> None:
    config = {"model_type": "lethe-unknown", "hidden_size": 8, "num_hidden_layers": 3, "vocab_size": 10}
    (tmp_path / "config.json").write_text(json.dumps(config))
    shape = model_shape(str(tmp_path))
    per_layer = 4 * 8 * 8 + 3 * 8 * 32  # attention, and a gated MLP of 4 h
    assert shape.parameters == 3 * per_layer + 10 * 8 and "counted from its sizes" in shape.source


def test_no_configuration_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="no configuration"):
        model_shape("lethe-test/not-in-the-cache")
