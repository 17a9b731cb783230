"""How much device memory a training job needs, estimated before any weights load.

The parameter count and shapes come from the model's configuration alone: a built-in's own
config, a local folder's `config.json`, or the hub cache's. The model is built on the `meta`
device (no memory, no weights), so the count is exact for any architecture transformers knows;
an architecture it does not know (remote code is never run for this) is counted by a closed form
from the config's sizes. A model whose config cannot be found has no estimate (`model_shape`
returns None and says why), and the caller says so.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lethe.core.models.errors import ModelError
from lethe.core.models.hidden import CHUNK_ELEMENTS
from lethe.core.spec.fields import LoraSpec, ModelSpec

log = logging.getLogger(__name__)

GiB = 1024**3
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# bytes per quantized linear weight: NF4 is 4 bits plus, with double quantization, an 8-bit
# absmax per block of 64 and an fp32 scale per 256 of those; LLM.int8 is a byte plus row scales
QUANT_BYTES = {"nf4": 0.5 + 1 / 64 + 4 / (64 * 256), "int8": 1.0}
ADAPTER_BYTES = 16  # fp32 LoRA weight, its gradient and AdamW's two moments
ACTIVATION_ELEMENTS = 17  # per token, layer and hidden unit (Korthikanti et al. 2022: 34 bytes at 16 bits)
OVERHEAD = 1 * GiB  # CUDA context, allocator fragmentation, the process's libraries
# SmolLM2-135M's configuration, so the estimate needs no prepared checkpoint
SMOLLM2 = dict(
    model_type="llama",
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    vocab_size=49152,
    tie_word_embeddings=True,
)


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a model: its parameter count and sizes."""

    parameters: int
    hidden: int
    layers: int
    vocab: int
    # (leaf name, in, out) of every linear layer but the output head: LoRA's candidates and
    # what bitsandbytes quantizes
    linears: tuple[tuple[str, int, int], ...]
    model_type: str
    source: str  # where the configuration came from

    @property
    def linear_parameters(self) -> int:
        return sum(i * o for _, i, o in self.linears)

    def lora_parameters(self, lora: LoraSpec, default_targets: list[str] | str) -> int:
        """Parameters of a LoRA adapter (rank x (in + out) per adapted layer)."""
        targets = lora.target_modules or default_targets
        chosen = self.linears if targets == "all-linear" else [x for x in self.linears if x[0] in targets]
        return sum(lora.rank * (i + o) for _, i, o in chosen)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device, by part; `total` is what placement compares with a device's memory."""

    weights: float
    trainable: float
    reference: float
    activations: float
    logits: float
    overhead: float = OVERHEAD

    @property
    def total(self) -> float:
        return self.weights + self.trainable + self.reference + self.activations + self.logits + self.overhead

    def describe(self) -> str:
        parts = ("weights", "trainable", "reference", "activations", "logits", "overhead")
        shown = ", ".join(f"{p} {gib(getattr(self, p))}" for p in parts if getattr(self, p))
        return f"{gib(self.total)} ({shown})"


def gib(size: float) -> str:
    return f"{size / GiB:.3g} GiB"


@dataclass(frozen=True)
class Workload:
    """What one training micro-step holds on each device."""

    rows: int  # sequences per micro-batch: train.batch_size of each kind (forget, normal)
    length: int  # tokens per sequence: format.max_length
    gradient_checkpointing: bool
    reference_logits: bool  # the method compares with the original model's outputs (a KL term)


def estimate_memory(
    shape: ModelShape, model: ModelSpec, lora: LoraSpec | None, work: Workload
) -> MemoryEstimate:
    """Bytes one device needs to train, by part. With P parameters, Q of them in linear layers,
    L LoRA parameters, b bytes per weight of `model.dtype`, h hidden size, n layers, V vocabulary:

    - weights: P x b; quantized, Q x q (q: 0.52 NF4, 1 int8) + (P - Q) x 4 (the rest is fp32
      after `prepare_model_for_kbit_training`)
    - trainable: L x 16 under LoRA (fp32 weight, gradient, AdamW's two moments); 3 x P x b for
      full fine-tuning (gradient and two moments in the weights' dtype)
    - reference: P x b for full fine-tuning with a KL term (a frozen copy); LoRA needs none
    - activations: rows x length x h x a x 17 x n (Korthikanti et al. 2022: 34 bytes per token,
      layer and hidden unit at 16 bits), a = 4 in fp32 else 2; with gradient checkpointing
      rows x length x h x a x (n + 17): each layer's input, and one layer recomputed
    - logits: one chunk of the output layer (2^23 logits: output, fp32 copy, gradient: 12 bytes
      each) + rows x length x V x a for the reference's logits of a KL term
    - overhead: 1 GiB

    Assumptions: each of `model.devices` data-parallel processes holds a whole copy and its own
    rows (`work.rows`: the caller splits the batch), and DDP's gradient buckets (a copy of the
    trainable gradients) are not counted; attention does not keep the T x T scores (SDPA,
    flash); evaluation and generation (a KV cache) need less than a training step; the optimizer
    keeps no master copy."""
    b = DTYPE_BYTES[model.dtype]
    a = 4 if model.dtype == "fp32" else 2
    if model.quantize is not None:
        q = shape.linear_parameters
        weights = q * QUANT_BYTES[model.quantize] + (shape.parameters - q) * 4
    else:
        weights = shape.parameters * b
    if lora is not None:
        trainable, reference = shape.lora_parameters(lora, shape_targets(shape)) * ADAPTER_BYTES, 0
    else:
        trainable = 3 * shape.parameters * b
        reference = shape.parameters * b if work.reference_logits else 0
    tokens = work.rows * work.length
    kept = (
        shape.layers + ACTIVATION_ELEMENTS
        if work.gradient_checkpointing
        else ACTIVATION_ELEMENTS * shape.layers
    )
    logits = CHUNK_ELEMENTS * 12 + (tokens * shape.vocab * a if work.reference_logits else 0)
    return MemoryEstimate(
        weights=float(weights),
        trainable=float(trainable),
        reference=float(reference),
        activations=float(tokens * shape.hidden * a * kept),
        logits=float(logits),
    )


def shape_targets(shape: ModelShape) -> list[str] | str:
    """The default LoRA targets of the shape's architecture; every linear layer if it has none."""
    from lethe.core.models.lora import LORA_TARGETS

    return LORA_TARGETS.get(shape.model_type, "all-linear")


# ------------------------------------------------------------------ the shape from a config
@functools.lru_cache(maxsize=64)
def model_shape(name: str, revision: str | None = None) -> ModelShape:
    """The shape of a model by reference, from its configuration alone; ModelError saying why
    when no configuration can be found here (not a built-in, a folder or a cached hub id)."""
    config, source = _configuration(name, revision)
    if not isinstance(config, dict):
        return _counted(config, source)
    try:
        import transformers

        built = transformers.AutoConfig.for_model(**config)
    except (ValueError, KeyError, TypeError) as err:  # an architecture transformers lacks
        log.info("counting %s by its sizes: %s", name, err)
        return _closed_form(config, source)
    return _counted(built, source)


def _configuration(name: str, revision: str | None) -> tuple[Any, str]:
    """A config object (built-ins) or a config.json's contents, and where it came from."""
    from lethe.core.models.loading import HUB_ID, cache_dir
    from lethe.core.models.tiny import TINY_MODELS, _tiny_config, byte_tokenizer

    if name in TINY_MODELS:
        return _tiny_config(name, len(byte_tokenizer())), f"the built-in {name}'s configuration"
    if name == "smollm2-135m-instruct":
        prepared = cache_dir() / name / "config.json"
        if not prepared.is_file():
            return dict(SMOLLM2), "SmolLM2-135M's published configuration"
        return _read(prepared), str(prepared)
    folder = Path(name).expanduser()
    if (folder / "config.json").is_file():
        return _read(folder / "config.json"), str(folder / "config.json")
    if HUB_ID.match(name):
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json", revision=revision)
        if isinstance(cached, str):
            return _read(Path(cached)), f"the hub cache's config.json of {name}"
    raise ModelError(
        f"no configuration of {name!r} here (not a built-in, a folder, or a hub id in the cache)"
    )


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise ModelError(f"{path} is not a transformers configuration (no model_type)")
    return data


def _counted(config: Any, source: str) -> ModelShape:
    """Build the model on the meta device (no memory) and count: exact for any architecture."""
    import torch
    import transformers
    from transformers.pytorch_utils import Conv1D

    with torch.device("meta"):  # ties the output head to the embeddings as a real build does
        model = transformers.AutoModelForCausalLM.from_config(config)
    head = model.get_output_embeddings()
    linears = []
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if module is head:
            continue
        if isinstance(module, torch.nn.Linear):
            linears.append((leaf, module.in_features, module.out_features))
        elif isinstance(module, Conv1D):  # gpt2's linear layers store [in, out]
            linears.append((leaf, int(module.weight.shape[0]), int(module.weight.shape[1])))
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return ModelShape(
        parameters=sum(p.numel() for p in model.parameters()),  # tied weights once
        hidden=int(text.hidden_size),
        layers=int(text.num_hidden_layers),
        vocab=int(text.vocab_size),
        linears=tuple(linears),
        model_type=str(config.model_type),
        source=source,
    )


def _closed_form(config: dict[str, Any], source: str) -> ModelShape:
    """A decoder-only transformer's count from its sizes alone: per layer four h x h attention
    projections and a gated MLP (three h x i), plus the embeddings (twice when untied)."""

    def first(*keys: str) -> int:
        for key in keys:
            if isinstance(config.get(key), int):
                return int(config[key])
        raise ModelError(f"{source}: none of {keys} is given, so its size cannot be estimated")

    h = first("hidden_size", "n_embd", "d_model")
    n = first("num_hidden_layers", "n_layer", "num_layers")
    vocab = first("vocab_size")
    inner = config.get("intermediate_size") or 4 * h
    per_layer = [("attn", h, h)] * 4 + [("mlp", h, inner), ("mlp", h, inner), ("mlp", inner, h)]
    linears = tuple(per_layer * n)
    embeddings = vocab * h * (1 if config.get("tie_word_embeddings", True) else 2)
    return ModelShape(
        parameters=sum(i * o for _, i, o in linears) + embeddings,
        hidden=h,
        layers=n,
        vocab=vocab,
        linears=linears,
        model_type=str(config.get("model_type", "")),
        source=f"{source} (counted from its sizes: an architecture transformers does not know)",
    )
