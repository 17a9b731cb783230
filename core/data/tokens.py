"""Turning examples into token ids and label masks (prompt and padding masked with -100).

Prompt and answer are tokenised separately and concatenated, so the answer boundary is exact and
training sees the same tokens that generation does (the reference code recovered the boundary
from a re-tokenised prefix and was off by one; see docs/methods.md). Trailing whitespace of the
prompt part moves to the start of the answer, so "Answer:" is followed by " Paris", the token a
model would generate, rather than a dangling space token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lethe.core.spec.fields import PromptFormat, PromptTemplate

IGNORE_INDEX = -100


class OverlengthError(ValueError):
    """An example is longer than `max_length` and the format says `reject`."""


@dataclass(frozen=True)
class Encoded:
    """One tokenised example; `labels` is aligned with `input_ids` (shifting happens in losses)."""

    input_ids: list[int]
    labels: list[int]


def render_template(tokenizer: Any, template: PromptTemplate) -> str:
    """A template as text: a chat template becomes the conversation the tokenizer writes up to the
    assistant's turn (system message as asked, the user's message `{prompt}`), then `{response}`."""
    if isinstance(template, str):
        return template
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("this model's tokenizer has no chat template: write format.template out instead")
    system = [{"role": "system", "content": template.system or ""}] if template.chat == "system" else []
    messages = [*system, {"role": "user", "content": "{prompt}"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return str(text) + "{response}"


def split_template(template: str, prompt: str, response: str) -> tuple[str, str]:
    """Return (prompt part, answer part) of the filled template, whitespace moved to the answer."""
    head = template[: template.index("{response}")].replace("{prompt}", prompt)
    stripped = head.rstrip()
    return stripped, head[len(stripped) :] + response


def prompt_text(template: str, prompt: str) -> str:
    """The text a model is given to answer `prompt` (what generation starts from)."""
    return split_template(template, prompt, "")[0]


def encode(
    tokenizer: Any,
    prompt: str,
    response: str,
    fmt: PromptFormat,
    example_id: str = "?",
    template: str | None = None,
) -> Encoded:
    """Tokenise one example (in `template`, else the format's); answer tokens are the labels,
    everything else is IGNORE_INDEX."""
    head, answer = split_template(template or fmt.text, prompt, response)
    prompt_ids = tokenizer(head, add_special_tokens=True)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] if answer.strip() else []
    total = len(prompt_ids) + len(answer_ids)
    if total > fmt.max_length:
        if fmt.overlength == "reject":
            raise OverlengthError(
                f"example {example_id} has {total} tokens, over max_length={fmt.max_length}; "
                "raise format.max_length or set format.overlength: truncate"
            )
        answer_ids = answer_ids[: max(fmt.max_length - len(prompt_ids), 0)]
        if len(prompt_ids) + len(answer_ids) > fmt.max_length:
            # keep the end of the prompt: it is what the answer follows
            prompt_ids = prompt_ids[len(prompt_ids) - fmt.max_length :]
    return Encoded(prompt_ids + answer_ids, [IGNORE_INDEX] * len(prompt_ids) + list(answer_ids))


def pad_id_of(tokenizer) -> int:
    """The id used for padding: the tokenizer's pad token, else its end-of-sequence token."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    return 0


def collate(rows: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of examples into `input_ids`, `attention_mask` and `labels` tensors [B, T]."""
    width = max(len(r.input_ids) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row.input_ids)
        input_ids[i, :n] = torch.tensor(row.input_ids)
        labels[i, :n] = torch.tensor(row.labels)
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
