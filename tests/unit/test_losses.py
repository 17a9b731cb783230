"""Each loss against values worked out by hand, and the masking rules they share."""

import math

import pytest
import torch

from lethe.core.data.tokens import IGNORE_INDEX
from lethe.core.methods import losses


def _two_step_example() -> tuple[torch.Tensor, torch.Tensor]:
    """B=1, T=3, V=2. Position 0 predicts token 1 with p = 3/4 (logits 0, ln 3); position 1
    predicts token 0 with p = 1/2 (logits 0, 0). Position 2's logits are never used."""
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0], [5.0, -5.0]]])
    labels = torch.tensor([[IGNORE_INDEX, 1, 0]])
    return logits, labels


def test_token_logprobs_shifts_once_and_masks():
    logits, labels = _two_step_example()
    logp, mask = losses.token_logprobs(logits, labels)
    assert logp.shape == mask.shape == (1, 2)
    assert mask.tolist() == [[True, True]]
    assert logp[0, 0].item() == pytest.approx(math.log(0.75), abs=1e-6)
    assert logp[0, 1].item() == pytest.approx(math.log(0.5), abs=1e-6)


def test_sequence_nll_mean_and_sum_by_hand():
    logp, mask = losses.token_logprobs(*_two_step_example())
    # -(ln 3/4 + ln 1/2) = 0.287682 + 0.693147 = 0.980829; mean over 2 tokens = 0.490415
    assert losses.sequence_nll(logp, mask, "sum").item() == pytest.approx(0.980829, abs=1e-5)
    assert losses.sequence_nll(logp, mask, "mean").item() == pytest.approx(0.490415, abs=1e-5)
    assert losses.gradient_ascent(logp, mask).item() == pytest.approx(-0.490415, abs=1e-5)


def test_masked_positions_do_not_count():
    """Prompt and padding positions (label -100) change nothing, whatever their logits."""
    logits, labels = _two_step_example()
    logits = torch.cat([torch.randn(1, 2, 2) * 50, logits], dim=1)  # two extra prompt tokens
    labels = torch.cat([torch.full((1, 2), IGNORE_INDEX), labels], dim=1)
    logp, mask = losses.token_logprobs(logits, labels)
    assert losses.sequence_nll(logp, mask).item() == pytest.approx(0.490415, abs=1e-5)


def test_example_without_answer_tokens_gives_zero():
    logits = torch.randn(1, 4, 3)
    labels = torch.full((1, 4), IGNORE_INDEX)
    logp, mask = losses.token_logprobs(logits, labels)
    assert losses.sequence_nll(logp, mask).item() == 0.0


def test_forward_kl_by_hand():
    """p_ref = (1/2, 1/2), p_θ = (1/4, 3/4): KL = ½ ln(½/¼) + ½ ln(½/¾) = ½ ln 2 + ½ ln ⅔ = 0.143841."""
    ref = torch.tensor([[[0.0, 0.0]]])
    cur = torch.tensor([[[0.0, math.log(3.0)]]])
    mask = torch.tensor([[True]])
    assert losses.forward_kl(ref, cur, mask).item() == pytest.approx(0.143841, abs=1e-5)
    assert losses.forward_kl(cur, cur, mask).item() == pytest.approx(0.0, abs=1e-7)


def test_forward_kl_is_mean_over_scored_positions_only():
    ref = torch.tensor([[[0.0, 0.0], [9.0, -9.0]]])
    cur = torch.tensor([[[0.0, math.log(3.0)], [-9.0, 9.0]]])
    mask = torch.tensor([[True, False]])  # the second position is prompt/padding
    assert losses.forward_kl(ref, cur, mask).item() == pytest.approx(0.143841, abs=1e-5)


def test_losses_are_per_example():
    logits = torch.randn(3, 5, 7)
    labels = torch.randint(0, 7, (3, 5))
    labels[:, :2] = IGNORE_INDEX
    logp, mask = losses.token_logprobs(logits, labels)
    assert losses.sequence_nll(logp, mask).shape == (3,)
    assert losses.forward_kl(logits[:, :-1], logits[:, :-1] + 1.0, mask).shape == (3,)


def test_bf16_logits_are_scored_in_fp32():
    logits, labels = _two_step_example()
    logp, _ = losses.token_logprobs(logits.to(torch.bfloat16), labels)
    assert logp.dtype == torch.float32


# ------------------------------------------------------------------ the methods' losses by hand
LN2, LN3 = math.log(2.0), math.log(3.0)


def _rows(*logps: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of one answer per row (all positions scored)."""
    logp = torch.tensor([list(row) for row in logps])
    return logp, torch.ones_like(logp, dtype=torch.bool)


def test_npo_by_hand():
    """log π_θ = ln ½ + ln ½ = -2 ln 2, log π_ref = ln ½ + 0 = -ln 2, so log ratio = -ln 2.
    β = 1: L = -2 ln σ(ln 2) = -2 ln ⅔ = 0.810930 = (2/β) ln(1 + (π_θ/π_ref)^β) = 2 ln 1.5.
    β = 0.1: L = 20 ln(1 + ½^0.1) = 13.181805."""
    logp, mask = _rows([-LN2, -LN2])
    ref, _ = _rows([-LN2, 0.0])
    assert losses.npo(logp, mask, ref, beta=1.0).item() == pytest.approx(0.810930, abs=1e-5)
    assert losses.npo(logp, mask, ref, beta=0.1).item() == pytest.approx(13.181805, abs=1e-4)
    assert losses.npo(ref, mask, ref, beta=1.0).item() == pytest.approx(2 * LN2, abs=1e-6)  # ratio 1


def test_simnpo_by_hand():
    """NLL = ln 2 + ln 4 = 3 ln 2 over |y| = 2 tokens: mean 1.039721. β = 2, γ = 0:
    L = -(2/2) ln σ(2 · 1.039721) = -ln σ(ln 8) = ln(9/8) = 0.117783.
    γ = 0.5: L = -ln σ(2 · 0.539721) = -ln σ(1.079442) = 0.292509."""
    logp, mask = _rows([-LN2, -2 * LN2])
    assert losses.simnpo(logp, mask, beta=2.0, gamma=0.0).item() == pytest.approx(0.117783, abs=1e-5)
    assert losses.simnpo(logp, mask, beta=2.0, gamma=0.5).item() == pytest.approx(0.292509, abs=1e-5)


def test_dpo_by_hand():
    """Refusal (win): log π_θ = ln ½, log π_ref = ln ¼ → ratio ln 2. Forget answer (lose):
    ln ¼ vs ln ½ → ratio -ln 2. Margin = 2 ln 2 = ln 4; β = 1: L = -2 ln σ(ln 4) = -2 ln ⅘ = 0.446287."""
    win, mask = _rows([-LN2])
    win_ref, _ = _rows([-2 * LN2])
    lose, _ = _rows([-LN2, -LN2])
    lose_ref, lose_mask = _rows([-LN2, 0.0])
    got = losses.dpo(win, mask, win_ref, lose, lose_mask, lose_ref, beta=1.0)
    assert got.item() == pytest.approx(0.446287, abs=1e-5)


def test_undial_by_hand():
    """V = 2, target token 1. Teacher logits (0, 0) lowered by β = ln 3 at the target: (0, -ln 3),
    so q = (¾, ¼). Student logits (0, ln 3): p = (¼, ¾).
    CE(q, p) = -(¾ ln ¼ + ¼ ln ¾) = 1.039721 + 0.071921 = 1.111641."""
    ref = torch.tensor([[[0.0, 0.0]]])
    cur = torch.tensor([[[0.0, LN3]]])
    targets, mask = torch.tensor([[1]]), torch.tensor([[True]])
    assert losses.undial(cur, ref, targets, mask, beta=LN3).item() == pytest.approx(1.111641, abs=1e-5)


def test_undial_matches_a_one_hot_implementation_and_skips_unscored_positions():
    torch.manual_seed(0)
    cur, ref = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    targets, mask = torch.randint(0, 5, (2, 3)), torch.tensor([[True, True, False], [False, True, True]])
    teacher = torch.softmax(ref - 4.0 * torch.nn.functional.one_hot(targets, 5), dim=-1)
    per_position = -(teacher * torch.log_softmax(cur, dim=-1)).sum(-1)
    expected = (per_position * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(losses.undial(cur, ref, targets, mask, beta=4.0), expected)


def test_activation_mse_by_hand_and_in_fp32():
    """h = [[1, 2], [3, 4]], target c·u = (1, 0): token 0 (0² + 2²)/2 = 2, token 1 (2² + 4²)/2 = 10;
    both tokens: 6; the second masked as padding: 2. In fp16, 300² overflows; the loss casts first."""
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    target = torch.tensor([1.0, 0.0])
    assert losses.activation_mse(hidden, target, torch.tensor([[True, True]])).item() == pytest.approx(6.0)
    assert losses.activation_mse(hidden, target, torch.tensor([[True, False]])).item() == pytest.approx(2.0)
    assert losses.activation_mse(hidden, hidden, torch.tensor([[True, True]])).item() == 0.0
    big = torch.full((1, 1, 2), 300.0, dtype=torch.float16)
    assert (
        losses.activation_mse(big, torch.zeros(2, dtype=torch.float16), torch.tensor([[True]])).item()
        == 90000.0
    )


def test_shift_labels_is_what_token_logprobs_scores():
    _, labels = _two_step_example()
    targets, mask = losses.shift_labels(labels)
    assert targets.tolist() == [[1, 0]] and mask.tolist() == [[True, True]]
    masked = losses.shift_labels(torch.tensor([[5, IGNORE_INDEX, 7]]))
    assert masked[0].tolist() == [[0, 7]] and masked[1].tolist() == [[False, True]]
