"""Each loss against values worked out by hand, and the masking rules they share."""

import math

import pytest
import torch

from lethe.core import losses
from lethe.core.tokens import IGNORE_INDEX


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
