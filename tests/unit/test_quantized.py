"""4/8-bit base weights (issue 15, item 3): the from_pretrained arguments, the refusals before any
weights load, and LoRA on a base transformers marks as quantized. No GPU and no bitsandbytes here:
the loading path is followed up to `from_pretrained`, which is stood in for."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from lethe.core.models import loading, quantized
from lethe.core.models.errors import ModelError
from lethe.core.models.lora import attach_lora
from lethe.core.models.quantized import pretrained_kwargs
from lethe.core.models.tiny import build_tiny
from lethe.core.run.validate import validate_spec_file
from lethe.core.spec.fields import LoraSpec, ModelSpec
from lethe.core.spec.job import SpecError, parse_spec

QUANTIZED = {"name": "tiny-llama", "dtype": "bf16", "device": "auto", "quantize": "nf4"}


def spec_dict(model: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "unlearn": {"method": "ga", "forget": {"source": "builtin:normal_qa"}, "train": {"steps": 1}},
        **extra,
    }


def test_nf4_kwargs_are_qlora_double_quant_in_the_compute_dtype() -> None:
    kwargs = pretrained_kwargs(ModelSpec(**{**QUANTIZED, "dtype": "fp16"}), cuda_index=1)
    config = kwargs["quantization_config"]
    assert config.load_in_4bit and not config.load_in_8bit
    assert config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.float16
    assert kwargs["dtype"] == torch.float16 and kwargs["device_map"] == {"": 1}


def test_int8_and_unquantized_kwargs() -> None:
    kwargs = pretrained_kwargs(ModelSpec(**{**QUANTIZED, "quantize": "int8"}))
    assert kwargs["quantization_config"].load_in_8bit and not kwargs["quantization_config"].load_in_4bit
    assert kwargs["device_map"] == {"": 0}
    assert pretrained_kwargs(ModelSpec(name="tiny-llama", dtype="bf16")) == {"dtype": torch.bfloat16}


@pytest.mark.parametrize(
    "change,message",
    [({"device": "cpu"}, "needs a CUDA GPU"), ({"dtype": "fp32"}, "set model.dtype to bf16 or fp16")],
)
def test_a_quantized_spec_the_schema_refuses(change: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as err:
        ModelSpec(**{**QUANTIZED, **change})
    assert "model.quantize" in str(err.value)


def test_a_quantized_base_needs_lora_and_no_quantize_probe() -> None:
    with pytest.raises(SpecError, match="needs LoRA"):
        parse_spec(spec_dict(QUANTIZED, lora=None))
    with pytest.raises(SpecError, match="set probes.quantize to null"):
        parse_spec(spec_dict(QUANTIZED, probes={}))
    spec = parse_spec(spec_dict(QUANTIZED, probes={"quantize": None}))
    assert spec.model.quantize == "nf4" and spec.probes is not None and spec.probes.relearn is not None


def _no_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any weights are built or loaded."""

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("weights were loaded before the quantization check")

    monkeypatch.setattr(loading, "build_tiny", refuse)
    monkeypatch.setattr(loading, "_from_pretrained", refuse)


def test_no_cuda_is_one_clear_line_before_any_weights_load(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_weights(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelError, match="needs a CUDA GPU") as err:
        loading.load_model(ModelSpec(**QUANTIZED))
    assert "\n" not in str(err.value) and "model.quantize 'nf4'" in str(err.value)


def test_no_bitsandbytes_is_one_clear_line_before_any_weights_load(monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("bitsandbytes") is not None:
        raise AssertionError("this test needs a machine without bitsandbytes (CI installs none)")
    _no_weights(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ModelError, match="needs the bitsandbytes package") as err:
        loading.load_model(ModelSpec(**{**QUANTIZED, "quantize": "int8"}))
    assert "\n" not in str(err.value) and "pip install bitsandbytes" in str(err.value)


def test_lethe_validate_tells_the_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = tmp_path / "spec.yaml"
    path.write_text(
        "model: {name: tiny-llama, dtype: bf16, quantize: nf4}\n"
        "unlearn: {method: ga, forget: {source: 'builtin:normal_qa'}, train: {steps: 1}}\n"
    )
    with pytest.raises(ModelError, match="needs a CUDA GPU"):
        validate_spec_file(path)
    path.write_text(path.read_text().replace(", quantize: nf4", ""))
    assert validate_spec_file(path).model.quantize is None


def test_a_quantized_built_in_loads_from_a_saved_copy_with_the_bnb_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With CUDA and bitsandbytes stood in for: from_pretrained gets the saved tiny model's folder,
    the quantization config and a device map on this rank's GPU, and the model is not moved."""
    import transformers

    monkeypatch.setenv("LETHE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(quantized, "check_quantization_support", lambda spec: None)
    monkeypatch.setattr(loading, "check_quantization_support", lambda spec: None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    seen: dict[str, Any] = {}
    real = transformers.AutoModelForCausalLM.from_pretrained

    def fake(where: Any, **kwargs: Any) -> Any:
        seen.update(kwargs, where=Path(where))
        plain = {k: v for k, v in kwargs.items() if k not in ("quantization_config", "device_map")}
        model = real(where, **plain)
        model.to = lambda *a, **k: pytest.fail("a quantized model was moved")  # type: ignore[method-assign]
        return model

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake)
    model, tokenizer = loading.load_model(ModelSpec(**QUANTIZED))
    assert seen["where"] == tmp_path / "models" / "tiny-llama"
    assert (seen["where"] / "config.json").is_file()
    assert not list((tmp_path / "models").glob("*.partial*"))
    assert seen["quantization_config"].load_in_4bit and seen["device_map"] == {"": 3}
    assert seen["dtype"] == torch.bfloat16 and not model.training
    assert tokenizer("ab").input_ids  # the byte tokenizer came back from the saved copy


def test_lora_on_a_quantized_base_is_prepared_for_kbit_training() -> None:
    """peft's preparation runs before the wrap on a base transformers marks as 4-bit: the base is
    frozen and its unquantized parameters are fp32; an unquantized base is left as it is."""
    model, _ = build_tiny("tiny-llama")
    model = model.to(torch.bfloat16)
    model.is_loaded_in_4bit = True  # what transformers sets on a bitsandbytes model
    wrapped = attach_lora(model, LoraSpec(rank=2))
    base = {n: p for n, p in wrapped.named_parameters() if "lora_" not in n}
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in base.values())
    assert any(p.requires_grad for n, p in wrapped.named_parameters() if "lora_" in n)
    plain, _ = build_tiny("tiny-llama")
    plain_wrapped = attach_lora(plain.to(torch.bfloat16), LoraSpec(rank=2))
    assert plain_wrapped.get_input_embeddings().weight.dtype == torch.bfloat16
