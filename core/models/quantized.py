"""4-bit and 8-bit base weights under LoRA (QLoRA), with bitsandbytes on a CUDA GPU.

`model.quantize: nf4` loads every linear layer of the base in 4-bit NormalFloat with double
quantization (the QLoRA recipe), computing in `model.dtype`; `int8` loads them in LLM.int8. The
embeddings, norms and the output head stay unquantized (bitsandbytes quantizes linear layers
only). The base is frozen; the LoRA adapter on top trains in fp32 (`attach_lora` runs peft's
`prepare_model_for_kbit_training` before the wrap).

What refuses a quantized spec, and where: the spec itself without `model.device: cpu`, LoRA and a
16-bit dtype (`ModelSpec`, `JobSpec`); this machine without CUDA or without bitsandbytes
(`check_quantization_support`, before any weights load: `lethe validate`, `load_model`); the
service where no queue has GPU workers (`lethe.service.jobs.placement`).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from lethe.core.models.errors import ModelError
from lethe.core.spec.fields import ModelSpec

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def bitsandbytes_config(spec: ModelSpec) -> Any:
    """transformers' `BitsAndBytesConfig` for the spec's `quantize` (None when unquantized)."""
    if spec.quantize is None:
        return None
    from transformers import BitsAndBytesConfig

    if spec.quantize == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,  # the block scales quantized too: ~0.4 bit/param less
            bnb_4bit_compute_dtype=DTYPES[spec.dtype],
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def pretrained_kwargs(spec: ModelSpec, cuda_index: int | None = None) -> dict[str, Any]:
    """The weight-related `from_pretrained` keyword arguments: `dtype`, and for a quantized spec
    the bitsandbytes config and a `device_map` placing the whole model on `cuda_index` (quantized
    weights are made on the device as they load; a quantized model cannot be moved afterwards).
    A pure function: nothing is imported from bitsandbytes and nothing is loaded."""
    kwargs: dict[str, Any] = {"dtype": DTYPES[spec.dtype]}
    if spec.quantize is not None:
        kwargs["quantization_config"] = bitsandbytes_config(spec)
        kwargs["device_map"] = {"": 0 if cuda_index is None else cuda_index}
    return kwargs


def check_quantization_support(spec: ModelSpec) -> None:
    """Raise a one-line ModelError when this machine cannot load the spec's quantized base:
    no CUDA device, or no bitsandbytes. Nothing is loaded."""
    if spec.quantize is None:
        return
    if not torch.cuda.is_available():
        raise ModelError(
            f"model.quantize {spec.quantize!r} needs a CUDA GPU (bitsandbytes' kernels), and this "
            "machine has none: run it on a GPU worker, or set model.quantize to null"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError(
            f"model.quantize {spec.quantize!r} needs the bitsandbytes package, which is not "
            "installed here: pip install bitsandbytes, or set model.quantize to null"
        )


def is_quantized(model: Any) -> bool:
    """Whether transformers loaded the model's weights in 4 or 8 bits (bitsandbytes)."""
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def prepare_for_adapter(model: Any) -> Any:
    """peft's `prepare_model_for_kbit_training` for a quantized base (a no-op otherwise): the base
    frozen, its unquantized parameters (norms, embeddings, head) in fp32 for stable training, and
    the inputs' embeddings requiring grad so gradients reach the adapter. Gradient checkpointing
    is left to `train.gradient_checkpointing` (the engine turns it on per stage)."""
    if not is_quantized(model):
        return model
    import peft

    return peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
