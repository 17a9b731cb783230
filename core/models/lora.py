"""LoRA: the default target modules per architecture and attaching a fresh adapter."""

from __future__ import annotations

from typing import Any

import torch

from lethe.core.models.errors import ModelError
from lethe.core.models.quantized import prepare_for_adapter
from lethe.core.spec.fields import LoraSpec

# LoRA targets by architecture (`config.model_type`): attention projections, as in the reference
# code (q/v) plus k/o, which costs little and gives the adapter room to move behaviour.
LORA_TARGETS: dict[str, list[str]] = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma3_text": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "gpt2": ["c_attn", "c_proj"],
    "gpt_neox": ["query_key_value", "dense"],
}


def lora_targets(model: Any, lora: LoraSpec) -> list[str] | str:
    """The spec's modules, peft's `all-linear`, or the architecture's attention projections."""
    if lora.target_modules == "all-linear":
        return "all-linear"
    if lora.target_modules:
        return list(lora.target_modules)
    kind = getattr(model.config, "model_type", "")
    if kind not in LORA_TARGETS:
        raise ModelError(f"no default LoRA target modules for architecture {kind!r}; set lora.target_modules")
    return LORA_TARGETS[kind]


def attach_lora(model: Any, lora: LoraSpec, seed: int = 0) -> Any:
    """Wrap `model` in a fresh LoRA adapter (B = 0, so it starts equal to the base model).

    A is initialised at random; seeding it here makes two runs of one spec identical. A 4/8-bit
    base (`model.quantize`) is prepared for k-bit training first (see `prepare_for_adapter`).
    """
    import peft

    config = peft.LoraConfig(
        task_type="CAUSAL_LM",
        r=lora.rank,
        lora_alpha=lora.alpha,  # type: ignore[arg-type]  # peft annotates int; it scales by alpha / r, any number
        lora_dropout=lora.dropout,
        target_modules=lora_targets(model, lora),
    )
    model = prepare_for_adapter(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return peft.get_peft_model(model, config)


def is_peft(model: Any) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")
