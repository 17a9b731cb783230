"""Tokenisation: exact answer boundaries, masks, truncation and padding."""

import pytest

from lethe.core.data.tokens import IGNORE_INDEX, OverlengthError, collate, encode, prompt_text, split_template
from lethe.core.models.tiny import byte_tokenizer
from lethe.core.spec.fields import PromptFormat


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def test_split_template_moves_whitespace_to_the_answer():
    head, answer = split_template("### Question: {prompt}\n### Answer: {response}", "Why?", "Because.")
    assert head == "### Question: Why?\n### Answer:"
    assert answer == " Because."
    assert prompt_text("Q: {prompt} A: {response}", "x") == "Q: x A:"


def test_labels_are_exactly_the_answer_tokens(tok):
    enc = encode(tok, "Why?", "Because.", PromptFormat())
    answer_ids = [i for i, lab in zip(enc.input_ids, enc.labels, strict=False) if lab != IGNORE_INDEX]
    assert tok.decode(answer_ids) == " Because."
    prompt_ids = [i for i, lab in zip(enc.input_ids, enc.labels, strict=False) if lab == IGNORE_INDEX]
    assert tok.decode(prompt_ids, skip_special_tokens=True) == "### Question: Why?\n### Answer:"


def test_prompt_only_example_has_no_labels(tok):
    enc = encode(tok, "Why?", "", PromptFormat())
    assert set(enc.labels) == {IGNORE_INDEX}


def test_overlength_truncates_the_answer_first(tok):
    fmt = PromptFormat(max_length=40)
    enc = encode(tok, "Why?", "x" * 100, fmt)
    assert len(enc.input_ids) == 40
    assert enc.labels[-1] != IGNORE_INDEX  # the prompt survived, the answer was cut


def test_overlength_reject_names_the_example(tok):
    with pytest.raises(OverlengthError, match="example ex-7 has .* tokens, over max_length=40"):
        encode(tok, "Why?", "x" * 100, PromptFormat(max_length=40, overlength="reject"), "ex-7")


def test_collate_pads_right_and_masks_padding(tok):
    rows = [encode(tok, "a", "bc", PromptFormat()), encode(tok, "a longer prompt", "d", PromptFormat())]
    batch = collate(rows, pad_id=0)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    short = len(rows[0].input_ids)
    assert batch["attention_mask"][0, short:].sum() == 0
    assert (batch["labels"][0, short:] == IGNORE_INDEX).all()


@pytest.mark.parametrize(
    "template,message",
    [
        ("{prompt} only", "must contain"),
        ("{response} then {prompt}", "must end with"),
    ],
)
def test_bad_templates_are_rejected(template, message):
    with pytest.raises(ValueError, match=message):
        PromptFormat(template=template)
