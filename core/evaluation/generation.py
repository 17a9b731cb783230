"""Batched generation with the KV cache, for evaluation and for answering forget prompts.

Prompts are built exactly as training builds them (`tokens.prompt_text`) and tokenised one by one
with the tokenizer's special tokens, so the ids a model is asked to continue are the ids it was
trained on; they are then LEFT-padded by hand. Left padding keeps every prompt's last token at the
same position, so the new tokens of a batch start at one column; padding by hand (rather than
through `tokenizer.padding_side`) leaves the shared tokenizer untouched and works for tokenizers
without a pad token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch

from lethe.core.data.tokens import pad_id_of, prompt_text
from lethe.core.evaluation.runtime import batches, inference, model_device
from lethe.core.spec.fields import GenerationConfig


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad token id lists into `input_ids` and `attention_mask`, both [B, T] (T = longest)."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            input_ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
            attention_mask[i, width - len(row) :] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _decoding_options(tokenizer: Any, gen: GenerationConfig) -> dict[str, Any]:
    options: dict[str, Any] = dict(
        max_new_tokens=gen.max_new_tokens,
        do_sample=gen.do_sample,
        use_cache=True,
        pad_token_id=pad_id_of(tokenizer),
    )
    if gen.do_sample:
        options.update(temperature=gen.temperature, top_p=gen.top_p, top_k=0)
    else:  # neutralise sampling defaults a checkpoint's generation_config may carry
        options.update(temperature=None, top_p=None, top_k=None)
    return options


def _generate_batch(model: Any, tokenizer: Any, prompts: Sequence[str], options: dict[str, Any]) -> list[str]:
    ids = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    if any(not row for row in ids):
        raise ValueError("a prompt tokenised to no tokens; the model has nothing to continue")
    batch = {k: v.to(model_device(model)) for k, v in left_pad(ids, options["pad_token_id"]).items()}
    out = model.generate(**batch, **options)  # [B, T + new]
    new_tokens = out[:, batch["input_ids"].shape[1] :]
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    template: str,
    gen: GenerationConfig,
    *,
    seed: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Answer each prompt; return only the new text (special tokens skipped, stripped).

    Greedy unless `gen.do_sample`; batches of `gen.batch_size` prompts of similar length (sorted
    by length, answers returned in the prompts' order), so little of a batch is padding. `seed`
    makes sampling repeatable without touching the caller's random state. Works for plain models
    and peft models alike.
    """
    if not prompts:
        return []
    options = _decoding_options(tokenizer, gen)
    texts = [prompt_text(template, p) for p in prompts]
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
    answers: dict[int, str] = {}
    rng = torch.random.fork_rng() if seed is not None else nullcontext()
    with rng, inference(model):
        if seed is not None:
            torch.manual_seed(seed)
        for chunk in batches(order, gen.batch_size):
            outputs = _generate_batch(model, tokenizer, [texts[i] for i in chunk], options)
            answers.update(zip(chunk, outputs, strict=True))
            if on_batch is not None:  # progress: how many prompts this batch answered
                on_batch(len(chunk))
    return [answers[i] for i in range(len(texts))]
