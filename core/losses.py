"""Loss functions: small pure functions over tensors, each returning one value per example.

Shapes: B examples, T tokens, V vocabulary. `token_logprobs` is the one place that shifts labels
and applies the -100 mask; every other function takes its output, per-token log-probs `logp`
[B, T-1] and a boolean `mask` [B, T-1] of the answer tokens that count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .tokens import IGNORE_INDEX


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each next token, and which positions count.

    logits [B, T, V] predict token t+1 at position t; labels [B, T] hold IGNORE_INDEX where a token
    is not scored (prompt, padding). Returns logp [B, T-1] (0 where masked) and mask [B, T-1].
    Computed in fp32, whatever the model's dtype, so bf16/fp16 runs do not overflow.
    """
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    flat = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    nll = F.cross_entropy(flat, targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none")
    return -nll.view_as(targets), mask


def sequence_nll(logp: torch.Tensor, mask: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Per-example negative log-likelihood of the answer, L(x, y) = -Σ_i log p(y_i | x, y_<i).

    reduction="sum" is the papers' Σ over answer tokens; "mean" divides by |y| (the reference
    code's per-sample mean). An example with no scored token gives 0. Returns [B].
    """
    total = -(logp * mask).sum(dim=1)
    if reduction == "sum":
        return total
    return total / mask.sum(dim=1).clamp_min(1)


def gradient_ascent(logp: torch.Tensor, mask: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """L_fgt = -L(x_fgt, y_fgt) (Yao et al. 2023, eq. 2): minimising it raises the forget NLL. [B]"""
    return -sequence_nll(logp, mask, reduction)


def forward_kl(ref_logits: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_nor = KL(h_θ0(x, y_<i) ‖ h_θ(x, y_<i)) per example, averaged over its scored positions.

    ref_logits, logits [B, T-1, V] are already aligned with mask [B, T-1] (drop the last position
    of the model's logits). Forward KL, reference first: Σ_v p_ref (log p_ref - log p_θ), as in
    Yao et al. eq. 4. Computed from log-softmax in fp32 (the reference code's log(softmax + 1e-12)
    overflows in fp16). Returns [B].
    """
    log_p = F.log_softmax(logits.float(), dim=-1)
    log_ref = F.log_softmax(ref_logits.float(), dim=-1)
    per_position = (log_ref.exp() * (log_ref - log_p)).sum(dim=-1)
    return (per_position * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)
