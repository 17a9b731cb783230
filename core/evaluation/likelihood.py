"""Log-likelihoods of answers under a causal LM (perplexity, forget NLL, multiple choice).

Examples are tokenised with `tokens.encode` (answer tokens are the labels, as in training),
right-padded with `tokens.collate`, and scored with `losses.token_logprobs`, the one place that
shifts labels; padding and prompt tokens therefore never change a score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lethe.core.data.examples import Example
from lethe.core.data.tokens import Encoded, collate, encode, pad_id_of
from lethe.core.evaluation.runtime import batches, inference, model_device
from lethe.core.methods.losses import sequence_nll, token_logprobs
from lethe.core.spec.fields import PromptFormat


def score_encoded(
    model: Any, tokenizer: Any, rows: Sequence[Encoded], batch_size: int
) -> list[tuple[float, int]]:
    """Per row: (summed NLL over its labelled tokens, number of labelled tokens).

    Each batch is collated to input_ids / attention_mask / labels [B, T]; logits are [B, T, V]
    and `token_logprobs` gives logp, mask [B, T-1].
    """
    pad_id = pad_id_of(tokenizer)
    device = model_device(model)
    scores: list[tuple[float, int]] = []
    with inference(model):
        for chunk in batches(rows, batch_size):
            batch = {k: v.to(device) for k, v in collate(list(chunk), pad_id).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            logp, mask = token_logprobs(logits, batch["labels"])
            sums = sequence_nll(logp, mask, reduction="sum")  # [B]
            counts = mask.sum(dim=1)  # [B]
            # + 0.0 turns the -0.0 of an unscored row into 0.0
            scores.extend(
                (float(s) + 0.0, int(c)) for s, c in zip(sums.tolist(), counts.tolist(), strict=False)
            )
    return scores


def answer_nll(
    model: Any, tokenizer: Any, examples: Sequence[Example], fmt: PromptFormat, batch_size: int
) -> list[tuple[float, int]]:
    """Per example: (Σ_i -log p(y_i | x, y_<i) over its answer tokens, number of answer tokens).

    An example whose answer is empty (or truncated away) gives (0.0, 0).
    """
    rows = [encode(tokenizer, ex.prompt, ex.response, fmt, ex.id) for ex in examples]
    return score_encoded(model, tokenizer, rows, batch_size)


def choice_logliks(
    model: Any, tokenizer: Any, question: str, choices: Sequence[str], fmt: PromptFormat, batch_size: int
) -> list[float]:
    """Summed log p(choice | prompt) of each choice, no length normalisation (as lm-eval does).

    The prompt is the template filled with `question`; the whitespace before `{response}` becomes
    the choice's leading delimiter (lm-eval's target delimiter " ").
    """
    if not choices:
        raise ValueError(f"question {question[:60]!r} has no choices to score")
    rows = [encode(tokenizer, question, choice, fmt) for choice in choices]
    return [-nll for nll, _ in score_encoded(model, tokenizer, rows, batch_size)]
