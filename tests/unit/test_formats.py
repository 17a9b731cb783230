"""Prompt formats: chat templates written out by the tokenizer, training rows drawn across
formats, and evaluation asked again in further formats and on further (cross-source) sets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from toy_data import FMT, FORGET, NORMAL

from lethe.core.data.tokens import encode, render_template
from lethe.core.evaluation.judges import build_judge
from lethe.core.evaluation.suite import EvalSets, evaluate
from lethe.core.models.loading import load_model
from lethe.core.run.pipeline import render_templates
from lethe.core.spec.evaluation import EvalSpec, JudgeSpec
from lethe.core.spec.fields import ChatTemplate, ModelSpec, PromptFormat
from lethe.core.spec.job import parse_spec
from lethe.core.spec.refs import dataset_refs
from lethe.core.training.rows import StageData, encode_rows, micro_batch_rows

# a ChatML-like template with a default system prompt, as SmolLM2's tokenizer has
CHAT = (
    "{% if messages[0]['role'] != 'system' %}<|sys|>Be helpful.<|end|>{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
PLAIN = "Q: {prompt}\nA: {response}"


@pytest.fixture(scope="module")
def tiny():
    model, tok = load_model(ModelSpec(name="tiny-llama", device="cpu"))
    tok.chat_template = CHAT
    return model, tok


def test_chat_templates_are_written_out_with_the_default_or_an_own_system_prompt(tiny):
    tok = tiny[1]
    assert render_template(tok, ChatTemplate()) == (
        "<|sys|>Be helpful.<|end|><|user|>{prompt}<|end|><|assistant|>{response}"
    )
    own = render_template(tok, ChatTemplate(chat="system", system="You sell shoes."))
    assert own == "<|system|>You sell shoes.<|end|><|user|>{prompt}<|end|><|assistant|>{response}"
    assert render_template(tok, PLAIN) == PLAIN
    tok_without = load_model(ModelSpec(name="tiny-llama", device="cpu"))[1]
    with pytest.raises(ValueError, match="no chat template"):
        render_template(tok_without, ChatTemplate())


def test_a_chat_format_is_checked_before_any_model_loads():
    with pytest.raises(ValidationError, match="set `system` exactly when chat is 'system'"):
        PromptFormat(template={"chat": "system"})
    with pytest.raises(ValidationError, match="must contain"):
        PromptFormat(train_templates=["no slots"])
    with pytest.raises(ValidationError, match="names must be"):
        EvalSpec(formats={"a b": PLAIN})


def test_the_spec_is_rendered_in_a_copy(tiny):
    spec = parse_spec(
        {
            "model": {"name": "tiny-llama"},
            "format": {"template": {"chat": "default"}, "train_templates": [PLAIN]},
            "unlearn": {"method": "ga", "forget": {"source": "f.jsonl"}, "train": {"steps": 1}},
            "eval": {"formats": {"chat_own": {"chat": "system", "system": "Hi."}}},
        }
    )
    rendered = render_templates(spec, tiny[1])
    assert rendered.format.texts()[0].startswith("<|sys|>Be helpful.") and rendered.format.texts()[1] == PLAIN
    assert rendered.eval.formats["chat_own"].startswith("<|system|>Hi.")
    assert isinstance(spec.format.template, ChatTemplate)  # the given spec is unchanged
    with pytest.raises(ValueError, match="not yet rendered"):
        spec.format.texts()


def test_training_rows_are_drawn_across_formats_and_keyed_by_them(tiny):
    fmt = PromptFormat(template=PLAIN, train_templates=["<{prompt}> {response}"], max_length=96)
    data = StageData(forget=FORGET, normal=NORMAL, formats=2)
    kinds = {"forget", "random", "normal"}
    batches = [micro_batch_rows(data, kinds, micro, 4, seed=0) for micro in range(4)]
    assert batches == [micro_batch_rows(data, kinds, micro, 4, seed=0) for micro in range(4)]  # seeded
    forget = [row for b in batches for row in b["forget"]]
    assert {row.template for row in forget} == {0, 1}
    for row in forget:
        assert row.key.endswith("@1") == (row.template == 1)
    for b in batches:  # a forget prompt's random-answer row is written in the same format
        assert [r.template for r in b["forget"]] == [r.template for r in b["random"]]
    encoded, slices, _ = encode_rows(tiny[1], fmt, batches[0])
    for row, enc in zip(batches[0]["forget"], encoded[slices["forget"]], strict=True):
        template = fmt.texts()[row.template]
        assert enc == encode(tiny[1], row.prompt, row.response, fmt, template=template)
    one = StageData(forget=FORGET, normal=NORMAL)
    assert all(r.template == 0 and "@" not in r.key for r in micro_batch_rows(one, kinds, 0, 4, 0)["forget"])


def test_evaluation_asks_again_in_each_format_and_on_each_further_set(tiny):
    model, tok = tiny
    spec = EvalSpec(
        judge=JudgeSpec(kind="refusal"),
        formats={"plain": PLAIN},
        max_examples=3,
    )
    spec.generation.max_new_tokens = 4
    sets = EvalSets(harmful_prompts=FORGET, benign_prompts=NORMAL, harmful_sets={"other": NORMAL[:2]})
    judge = build_judge(spec.judge, [], [], seed=0)
    result = evaluate(model, tok, spec, FMT, judge, forget=None, reference_responses=None, sets=sets)
    for name in ("harmful_rate", "harmful_rate/other", "harmful_rate@plain", "harmful_rate/other@plain"):
        assert 0.0 <= result.metrics[name] <= 1.0, name
    assert "over_refusal@plain" in result.metrics
    assert len(result.per_example["harmful_prompts/other"]) == 2
    assert len(result.per_example["harmful_prompts@plain"]) == 3
    asked = result.per_example["harmful_prompts@plain"][0]["prompt"]
    assert asked == FORGET[0].prompt  # the same prompt, written in the other format


def test_the_walker_finds_named_sets():
    spec = parse_spec(
        {
            "model": {"name": "tiny-llama"},
            "unlearn": {"method": "ga", "forget": {"source": "f.jsonl"}, "train": {"steps": 1}},
            "eval": {"harmful_sets": {"hb": {"source": "hb.jsonl", "schema": "prompts"}}},
        }
    )
    assert [(path, ref.source) for path, ref in dataset_refs(spec)] == [
        ("unlearn.forget", "f.jsonl"),
        ("eval.harmful_sets.hb", "hb.jsonl"),
    ]
