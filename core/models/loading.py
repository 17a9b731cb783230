"""Loading causal LMs by reference: built-ins (tiny, prepared), local folders and hub ids.

A reference is a built-in name (`tiny-llama`, `tiny-opt`, `smollm2-135m-instruct`, ...), a local
folder of a Hugging Face checkpoint, or a model-hub id `org/name` (optional revision). Hub loading
is real `from_pretrained` code: it honours HF_HUB_OFFLINE and the local cache.
"""

import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lethe.core.models.errors import ModelError
from lethe.core.models.gguf import prepare_smollm2
from lethe.core.models.quantized import DTYPES, check_quantization_support, pretrained_kwargs
from lethe.core.models.tiny import TINY_MODELS, build_tiny
from lethe.core.spec.fields import ModelSpec

log = logging.getLogger(__name__)

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def cache_dir() -> Path:
    """Where prepared built-in checkpoints live (LETHE_CACHE_DIR, else ~/.cache/lethe)."""
    root = os.environ.get("LETHE_CACHE_DIR") or Path.home() / ".cache" / "lethe"
    return Path(root) / "models"


PREPARED: dict[str, Callable[[Path], None]] = {"smollm2-135m-instruct": prepare_smollm2}
BUILTINS = (*TINY_MODELS, *PREPARED)


def prepare(name: str) -> Path:
    """Prepare a built-in checkpoint into the cache if it is not there yet; return its folder."""
    if name not in PREPARED:
        raise ModelError(f"{name!r} needs no preparation; preparable models: {', '.join(PREPARED)}")
    target = cache_dir() / name
    if not (target / "config.json").exists():
        log.info("preparing %s into %s", name, target)
        write_once(target, PREPARED[name])
    return target


def write_once(target: Path, write: Callable[[Path], None]) -> Path:
    """Have `write` fill a folder of this process's own beside `target`, then rename it into place.

    A crash mid-write never leaves half a checkpoint at `target`, and jobs that start together on
    one machine (sharing the cache) each write their own copy: the first rename wins and the
    others drop theirs, where one shared partial folder would have one job delete files that
    another is writing."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        write(partial)
        if not (target / "config.json").exists():
            try:
                partial.rename(target)
            except OSError:  # another job renamed its copy first: a non-empty target stays
                if not (target / "config.json").exists():
                    raise
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
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
            raise ModelError(
                f"model {name!r}: no config.json in that folder (expected a Hugging Face checkpoint folder)"
            )
        return
    if not HUB_ID.match(name):
        raise ModelError(
            f"unknown model {name!r}: use a built-in ({', '.join(BUILTINS)}), "
            "a local checkpoint folder, or a model-hub id 'org/name'"
        )


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("model.device is 'cuda' but no CUDA device is available; use 'cpu' or 'auto'")
    return torch.device(device)


def _from_pretrained(where: str | Path, spec: ModelSpec, **extra: Any) -> tuple[Any, Any]:
    import transformers
    from huggingface_hub import constants

    options = dict(
        revision=spec.revision,
        trust_remote_code=spec.trust_remote_code,
        local_files_only=constants.HF_HUB_OFFLINE,
        **extra,
    )
    cuda_index = torch.cuda.current_device() if spec.quantize is not None else None  # this rank's GPU
    weights = pretrained_kwargs(spec, cuda_index)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(where, **options)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            where, use_safetensors=True, **weights, **options
        )
    except (OSError, ValueError) as err:
        hint = " (offline mode is on: is it in the local cache?)" if constants.HF_HUB_OFFLINE else ""
        raise ModelError(f"cannot load model {spec.name!r}{hint}: {str(err).splitlines()[0]}") from None
    return model, tokenizer


def load_model(spec: ModelSpec) -> tuple[Any, Any]:
    """Load (model, tokenizer) for a reference, in the spec's dtype (or quantized), on its device,
    in eval mode. A quantized spec this machine cannot run fails here, before any weights load."""
    check_model_reference(spec)
    check_quantization_support(spec)
    if spec.name in TINY_MODELS and spec.quantize is not None:
        # bitsandbytes quantizes as from_pretrained loads: the built-in goes through a saved copy
        model, tokenizer = _from_pretrained(saved_tiny(spec.name), spec)
    elif spec.name in TINY_MODELS:
        model, tokenizer = build_tiny(spec.name)
        model = model.to(DTYPES[spec.dtype])
    elif spec.name in PREPARED:
        model, tokenizer = _from_pretrained(prepare(spec.name), spec.model_copy(update={"revision": None}))
    else:
        model, tokenizer = _from_pretrained(
            Path(spec.name).expanduser() if Path(spec.name).expanduser().exists() else spec.name, spec
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if spec.quantize is not None:  # already on its GPU (device_map); a quantized model cannot move
        return model.eval(), tokenizer
    return model.to(resolve_device(spec.device)).eval(), tokenizer


def saved_tiny(name: str) -> Path:
    """A built-in tiny model saved once into the cache as a checkpoint folder (for quantized
    loading), written by `write_once`."""
    target = cache_dir() / name
    if not (target / "config.json").exists():
        model, tokenizer = build_tiny(name)

        def write(folder: Path) -> None:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)

        write_once(target, write)
    return target


def base_reference(spec: ModelSpec) -> str | None:
    """The name an adapter's `base_model_name_or_path` should hold where peft's own is no use:
    a built-in's reference (peft leaves it empty for a model built in code, and names a prepared
    one by its cache folder, a path on this machine only). None for a hub id or a folder, which
    peft names itself.

    Written into the saved adapter config only, not set on the model: peft looks a model's name
    up on the hub at every save, which a built-in's name must not cause."""
    return spec.name if spec.name in BUILTINS else None
