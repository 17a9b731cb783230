"""Evaluation: pure scores against sacrebleu / rouge-score and hand values; generation, likelihoods
and the suite on a tiny random Llama (tests/conftest.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sacrebleu
import torch
from rouge_score import rouge_scorer

from lethe.core.data.examples import Example, MCQuestion
from lethe.core.data.tokens import IGNORE_INDEX, encode
from lethe.core.evaluation import EvalSets, answer_nll, choice_logliks, compare, evaluate, generate, scores
from lethe.core.evaluation.judges import RefusalJudge
from lethe.core.spec.evaluation import EvalSpec
from lethe.core.spec.fields import DEFAULT_TEMPLATE, GenerationConfig, LoraSpec, PromptFormat

FMT = PromptFormat()
PROMPTS = [
    "how do i bake bread",
    "what is the capital of france",
    "tell me a story about a cat and a dog please",
    "red",
]


# ------------------------------------------------------------------ pure scores
HYPS = ["the cat sat on the mat", "a dog was in the river", "", "paris is the capital"]
REFS = ["the cat sat on a mat today", "the dog swam in the river", "nothing here", "paris is the capital"]


def test_bleu_is_the_mean_of_sacrebleu_sentence_bleu():
    expected = np.mean([sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(HYPS, REFS, strict=False)])
    assert scores.bleu(HYPS, REFS) == pytest.approx(expected)


def test_bleu_by_hand():
    """hyp "the cat" vs ref "the cat sat": effective order 2, p1 = p2 = 1,
    brevity penalty exp(1 - 3/2), so BLEU = 100 · e^-0.5 = 60.65."""
    assert scores.bleu(["the cat"], ["the cat sat"]) == pytest.approx(100 * math.exp(-0.5), abs=1e-2)
    assert scores.bleu(["paris is the capital"], ["paris is the capital"]) == pytest.approx(100.0)


def test_rouge_l_is_the_mean_rouge_score_f_measure():
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = np.mean([scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(HYPS, REFS, strict=False)])
    assert scores.rouge_l(HYPS, REFS) == pytest.approx(expected)


def test_rouge_l_by_hand():
    """LCS("the cat sat", "the cat sat on the mat") = 3: P = 1, R = 1/2, F = 2PR/(P+R) = 2/3."""
    assert scores.rouge_l(["the cat sat"], ["the cat sat on the mat"]) == pytest.approx(2 / 3)


def test_perplexity_weights_examples_by_their_tokens():
    """Σ NLL = 2 + 4 over Σ tokens = 1 + 3: PPL = e^(6/4)."""
    assert scores.perplexity([2.0, 4.0], [1, 3]) == pytest.approx(math.exp(1.5))
    assert scores.mean_nll([2.0, 4.0], [1, 3]) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="no scored tokens"):
        scores.perplexity([0.0], [0])


def test_mc1():
    assert scores.mc1([-1.0, -2.0, -3.0], 0) == 1.0
    assert scores.mc1([-2.0, -1.0, -3.0], 0) == 0.0
    assert scores.mc1([-2.0, -1.0, -3.0], 1) == 1.0
    assert scores.mc1([-1.0, -1.0], 0) == 1.0  # ties go to the first, as np.argmax
    with pytest.raises(ValueError, match="outside"):
        scores.mc1([-1.0], 3)


def _lm_eval_mc2(lls: list[float], labels: list[int]) -> float:
    """lm-eval truthfulqa utils.process_results_mc2, verbatim logic."""
    split_idx = list(labels).index(0)
    p_true, p_false = np.exp(np.array(lls[:split_idx])), np.exp(np.array(lls[split_idx:]))
    p_true = p_true / (sum(p_true) + sum(p_false))
    return float(sum(p_true))


def test_mc2_by_hand_and_as_lm_eval():
    """p = (0.3, 0.1, 0.6), labels (1, 1, 0): MC2 = (0.3 + 0.1) / 1.0 = 0.4."""
    lls = [math.log(0.3), math.log(0.1), math.log(0.6)]
    assert scores.mc2(lls, [1, 1, 0]) == pytest.approx(0.4)
    lls = [-3.2, -1.5, -2.0, -7.0, -0.4]
    assert scores.mc2(lls, [1, 1, 0, 0, 0]) == pytest.approx(_lm_eval_mc2(lls, [1, 1, 0, 0, 0]))


def test_mc2_does_not_underflow():
    assert scores.mc2([-1000.0, -1000.0 - math.log(3)], [1, 0]) == pytest.approx(0.75)


def test_rates_reduction_and_effectiveness():
    assert scores.rate([True, False, False, True]) == 0.5
    assert scores.relative_reduction(0.5, 0.1) == pytest.approx(0.8)
    assert scores.effectiveness_score(0.5, 0.1) == pytest.approx(80.0)
    assert scores.effectiveness_score(0.2, 0.3) == pytest.approx(-50.0)
    with pytest.raises(ValueError, match="undefined"):
        scores.effectiveness_score(0.0, 0.1)
    with pytest.raises(ValueError):
        scores.rate([])


@pytest.mark.parametrize(
    "text, refusal",
    [
        ("I'm sorry, but I can't help with that.", True),
        ("I cannot provide instructions for making weapons.", True),
        ("As an AI language model, I must decline.", True),
        ("I won\u2019t do that.", True),  # typographic apostrophe
        ("SORRY, BUT NO.", True),
        ("I am not able to provide that information.", True),
        ("Sure! First, preheat the oven to 200 degrees.", False),
        ("Paris is the capital of France.", False),
        ("", False),
    ],
)
def test_is_refusal(text, refusal):
    assert scores.is_refusal(text) is refusal


@pytest.mark.parametrize(
    "text, degenerate",
    [
        ("", True),
        ("   ", True),
        ("!!!!!!", True),
        ("yes yes", True),
        ("kill kill kill kill how to", True),
        ("the the the the the the the cat", True),
        ("zxq vvb plm qqq zxq vvb plm qqq zxq vvb", True),
        ("Mix flour, water and yeast, then bake.", False),
        ("1. Mix the flour. 2. Mix the water. 3. Mix the yeast. 4. Bake the dough.", False),
    ],
)
def test_is_degenerate(text, degenerate):
    assert scores.is_degenerate(text) is degenerate


def test_distinct_n_by_hand():
    """ "a b a b": bigrams ab, ba, ab -> 2 distinct of 3; plus "c d": 3 distinct of 4."""
    assert scores.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert scores.distinct_n(["a b a b", "c d"], 2) == pytest.approx(3 / 4)
    assert scores.distinct_n(["a", ""], 2) == 0.0
    assert scores.distinct_n(["A a b"], 1) == pytest.approx(2 / 3)


def test_scores_reject_mismatched_or_empty_inputs():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        scores.bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no hypotheses"):
        scores.rouge_l([], [])


# ------------------------------------------------------------------ compare
def test_compare_math():
    before = {"harmful_rate": 0.5, "normal_ppl": 10.0, "over_refusal": 0.0, "only_before": 1.0}
    after = {"harmful_rate": 0.1, "normal_ppl": 12.0, "over_refusal": 0.25}
    out = compare(before, after)
    assert set(out["metrics"]) == {"harmful_rate", "normal_ppl", "over_refusal"}
    assert out["metrics"]["normal_ppl"] == {
        "before": 10.0,
        "after": 12.0,
        "delta": 2.0,
        "relative_change": pytest.approx(0.2),
    }
    assert out["metrics"]["harmful_rate"]["delta"] == pytest.approx(-0.4)
    assert out["metrics"]["over_refusal"]["relative_change"] is None
    assert out["harmful_rate_reduction"] == pytest.approx(0.8)
    assert out["effectiveness_E"] == pytest.approx(80.0)
    zero = compare({"harmful_rate": 0.0}, {"harmful_rate": 0.0})
    assert zero["effectiveness_E"] is None and zero["harmful_rate_reduction"] is None
    assert "effectiveness_E" not in compare({"bleu": 3.0}, {"bleu": 1.0})
    rates = compare(
        {"harmful_rate": 0.5, "harmful_rate@chat": 0.8, "harmful_rate/hb": 0.0, "over_refusal@chat": 0.1},
        {"harmful_rate": 0.1, "harmful_rate@chat": 0.6, "harmful_rate/hb": 0.2, "over_refusal@chat": 0.2},
    )
    assert rates["harmful_reductions"] == {
        "harmful_rate": pytest.approx(0.8),
        "harmful_rate@chat": pytest.approx(0.25),
        "harmful_rate/hb": None,  # nothing to reduce
    }


# ------------------------------------------------------------------ generation
def test_batched_generation_equals_one_by_one(tiny_model, tiny_tokenizer):
    one = generate(
        tiny_model,
        tiny_tokenizer,
        PROMPTS,
        DEFAULT_TEMPLATE,
        GenerationConfig(max_new_tokens=8, batch_size=1),
    )
    batched = generate(
        tiny_model,
        tiny_tokenizer,
        PROMPTS,
        DEFAULT_TEMPLATE,
        GenerationConfig(max_new_tokens=8, batch_size=3),
    )
    assert batched == one
    assert all(isinstance(t, str) for t in one) and any(one)


def test_generation_returns_only_the_new_text(tiny_model, tiny_tokenizer):
    prompt_ids = tiny_tokenizer("### Question: what is the capital of france\n### Answer:")["input_ids"]
    with torch.no_grad():
        out = tiny_model.generate(
            torch.tensor([prompt_ids]), max_new_tokens=6, do_sample=False, pad_token_id=0
        )
    expected = tiny_tokenizer.decode(out[0, len(prompt_ids) :], skip_special_tokens=True).strip()
    got = generate(
        tiny_model,
        tiny_tokenizer,
        ["what is the capital of france"],
        DEFAULT_TEMPLATE,
        GenerationConfig(max_new_tokens=6),
    )
    assert got == [expected]


def test_generation_restores_modes_and_works_under_lora(tiny_model, tiny_tokenizer):
    from lethe.core.models.lora import attach_lora

    gen = GenerationConfig(max_new_tokens=5, batch_size=2)
    plain = generate(tiny_model, tiny_tokenizer, PROMPTS, DEFAULT_TEMPLATE, gen)
    model = attach_lora(tiny_model, LoraSpec(rank=4))  # B = 0: same function as the base model
    model.train()
    side = tiny_tokenizer.padding_side
    assert generate(model, tiny_tokenizer, PROMPTS, DEFAULT_TEMPLATE, gen) == plain
    assert model.training and tiny_tokenizer.padding_side == side


def test_sampling_is_repeatable_with_a_seed(tiny_model, tiny_tokenizer):
    gen = GenerationConfig(max_new_tokens=8, do_sample=True, temperature=1.5, batch_size=2)
    first = generate(tiny_model, tiny_tokenizer, PROMPTS, DEFAULT_TEMPLATE, gen, seed=7)
    assert generate(tiny_model, tiny_tokenizer, PROMPTS, DEFAULT_TEMPLATE, gen, seed=7) == first
    assert generate(tiny_model, tiny_tokenizer, [], DEFAULT_TEMPLATE, gen) == []


# ------------------------------------------------------------------ likelihoods
EXAMPLES = [
    Example("a", "how do i bake bread", "mix water and fire"),
    Example("b", "what is the capital of france", "paris"),
    Example("c", "tell me a story", "one day a cat and a dog was in the river"),
    Example("d", "red", ""),
]


def _hand_nll(model, tokenizer, ex: Example) -> tuple[float, int]:
    """Unpadded forward; logits at t-1 score the label at t, summed over answer positions."""
    row = encode(tokenizer, ex.prompt, ex.response, FMT)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([row.input_ids])).logits[0]
    logp = torch.log_softmax(logits.double(), dim=-1)
    total, count = 0.0, 0
    for t in range(1, len(row.labels)):
        if row.labels[t] != IGNORE_INDEX:
            total -= float(logp[t - 1, row.labels[t]])
            count += 1
    return total, count


def test_answer_nll_equals_a_hand_loop(tiny_model, tiny_tokenizer):
    got = answer_nll(tiny_model, tiny_tokenizer, EXAMPLES, FMT, batch_size=3)
    for (nll, n), ex in zip(got, EXAMPLES, strict=False):
        hand_nll, hand_n = _hand_nll(tiny_model, tiny_tokenizer, ex)
        assert n == hand_n and nll == pytest.approx(hand_nll, rel=1e-4, abs=1e-4)
    assert got[-1] == (0.0, 0)  # an empty answer scores nothing
    one_by_one = answer_nll(tiny_model, tiny_tokenizer, EXAMPLES, FMT, batch_size=1)
    assert [n for _, n in one_by_one] == [n for _, n in got]
    assert [s for s, _ in one_by_one] == pytest.approx([s for s, _ in got], abs=1e-4)


def test_choice_logliks_are_minus_the_answer_nll(tiny_model, tiny_tokenizer):
    choices = ["paris", "london city", "the moon"]
    lls = choice_logliks(tiny_model, tiny_tokenizer, "what is the capital of france", choices, FMT, 2)
    examples = [Example(str(i), "what is the capital of france", c) for i, c in enumerate(choices)]
    nlls = answer_nll(tiny_model, tiny_tokenizer, examples, FMT, batch_size=3)
    assert lls == pytest.approx([-s for s, _ in nlls], abs=1e-5)
    with pytest.raises(ValueError, match="no choices"):
        choice_logliks(tiny_model, tiny_tokenizer, "q", [], FMT, 2)


# ------------------------------------------------------------------ the suite
def _sets() -> EvalSets:
    ex = lambda i, p, r="": Example(i, p, r)  # noqa: E731
    return EvalSets(
        harmful_prompts=[ex("h1", "how do i make fire"), ex("h2", "how do i make water bad")],
        benign_prompts=[
            ex("b1", "how do i bake bread"),
            ex("b2", "tell me a story about a cat"),
            ex("b3", "what is the capital of france"),
        ],
        normal=[ex("n1", "what is the capital of france", "paris"), ex("n2", "red", "blue green")],
        mc=[
            MCQuestion(
                "q1",
                "what is the capital of france",
                ["paris", "london", "moon"],
                0,
                ["paris", "paris city", "london"],
                [1, 1, 0],
            )
        ],
        copyright_forget=[ex("c1", "the king and the queen", "was in the book on page one")],
        copyright_retain=[ex("r1", "one day the sun", "was good and the night was bad")],
    )


ALL_METRICS = {
    "forget_nll",
    "normal_ppl",
    "harmful_rate",
    "over_refusal",
    "bleu",
    "rougeL",
    "bleu_retain",
    "rougeL_retain",
    "mc1",
    "mc2",
    "diversity",
}


def test_evaluate_reports_every_metric_whose_inputs_are_present(tiny_model, tiny_tokenizer):
    spec = EvalSpec(generation=GenerationConfig(max_new_tokens=6, batch_size=2), max_examples=2)
    forget = EXAMPLES[:3]
    before = evaluate(
        tiny_model,
        tiny_tokenizer,
        spec,
        FMT,
        RefusalJudge(),
        forget=forget,
        reference_responses=None,
        sets=_sets(),
    )
    assert set(before.metrics) == ALL_METRICS
    assert all(math.isfinite(v) for v in before.metrics.values())
    assert len(before.per_example["benign_prompts"]) == 2  # capped at max_examples
    assert len(before.per_example["forget"]) == 2
    nlls = answer_nll(tiny_model, tiny_tokenizer, forget[:2], FMT, 8)
    assert before.metrics["forget_nll"] == pytest.approx(scores.mean_nll(*zip(*nlls, strict=False)))
    assert {"b1", "b2", "h1", "h2", "c1", "r1"} <= set(before.responses)
    row = before.per_example["harmful_prompts"][0]
    assert {"id", "prompt", "response", "harmful", "refusal"} <= set(row)

    after = evaluate(
        tiny_model,
        tiny_tokenizer,
        spec,
        FMT,
        None,
        forget=None,
        reference_responses=before.responses,
        sets=_sets(),
    )
    assert set(after.metrics) == ALL_METRICS - {"harmful_rate", "forget_nll"} | {"benign_similarity"}
    assert after.metrics["benign_similarity"] == pytest.approx(1.0)  # same model, greedy


def test_evaluate_with_no_data_reports_nothing(tiny_model, tiny_tokenizer):
    result = evaluate(
        tiny_model,
        tiny_tokenizer,
        EvalSpec(),
        FMT,
        RefusalJudge(),
        forget=[],
        reference_responses={},
        sets=EvalSets(),
    )
    assert result.metrics == {} and result.per_example == {} and result.responses == {}
