"""Loss functions: small pure functions over tensors, each returning one value per example.

Shapes: B examples, T tokens, V vocabulary, D hidden size. `shift_labels` (used by
`token_logprobs`) is the one place that shifts labels and applies the -100 mask; every other
function takes its outputs: per-token log-probs `logp` [B, T-1], next-token `targets` [B, T-1] and
a boolean `mask` [B, T-1] of the answer tokens that count. Activation losses (RMU) take hidden
states [B, T, D] and a mask [B, T] of real (non-padding) tokens instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lethe.core.data.tokens import IGNORE_INDEX


def shift_labels(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The token each position predicts, and which positions count.

    labels [B, T] hold IGNORE_INDEX where a token is not scored (prompt, padding). Returns targets
    [B, T-1] (label of token t+1 at position t; 0 where masked, so it can index a vocabulary) and
    mask [B, T-1].
    """
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    return targets.masked_fill(~mask, 0), mask


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each next token, and which positions count.

    logits [B, T, V] predict token t+1 at position t. Returns logp [B, T-1] (0 where masked) and
    mask [B, T-1]. Computed in fp32, whatever the model's dtype, so bf16/fp16 runs do not overflow.
    """
    targets, mask = shift_labels(labels)
    flat = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    scored = targets.masked_fill(~mask, IGNORE_INDEX).reshape(-1)
    nll = F.cross_entropy(flat, scored, ignore_index=IGNORE_INDEX, reduction="none")
    return -nll.view_as(targets), mask


def position_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) at each position: logits [N, V], targets [N] -> [N] (fp32). The training step
    calls it on scored positions only, in chunks; `token_logprobs` is the same over a padded batch."""
    return -F.cross_entropy(logits.float(), targets, reduction="none")


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


def token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-example mean of per-position values [B, T-1] over the scored positions (mask). [B]"""
    return (values * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)


def position_kl(ref_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(ref_logits) ‖ softmax(logits)) at each position: [..., V] -> [...].

    Forward KL, reference first: Σ_v p_ref (log p_ref - log p_θ), as in Yao et al. eq. 4. From
    log-softmax in fp32 (the reference code's log(softmax + 1e-12) overflows in fp16).
    """
    log_p = F.log_softmax(logits.float(), dim=-1)
    log_ref = F.log_softmax(ref_logits.float(), dim=-1)
    return (log_ref.exp() * (log_ref - log_p)).sum(dim=-1)


def forward_kl(ref_logits: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_nor = KL(h_θ0(x, y_<i) ‖ h_θ(x, y_<i)) per example, averaged over its scored positions.

    ref_logits, logits [B, T-1, V] are already aligned with mask [B, T-1] (drop the last position
    of the model's logits). The training step evaluates `position_kl` at scored positions only,
    in chunks, and takes the same `token_mean`. Returns [B].
    """
    return token_mean(position_kl(ref_logits, logits), mask)


def sequence_logprob(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log π(y | x) = Σ_i log p(y_i | x, y_<i) over the answer tokens (summed, as NPO/DPO use). [B]"""
    return (logp * mask).sum(dim=1)


def npo(logp: torch.Tensor, mask: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO (Zhang et al. 2024, arXiv 2404.05868, eq. 3), per example:

        L = -(2/β) · log σ(-β · log(π_θ(y|x) / π_ref(y|x)))

    with sequence log-probs summed over answer tokens (the reference code's `get_batch_loss`).
    ref_logp [B, T-1] is the reference's `logp` on the same rows. As β → 0 the gradient is that
    of gradient ascent; the weight 2π_θ^β / (π_θ^β + π_ref^β) fades once y is unlikely. [B]
    """
    log_ratio = sequence_logprob(logp, mask) - sequence_logprob(ref_logp, mask)
    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio)


def simnpo(logp: torch.Tensor, mask: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """SimNPO (Fan et al. 2024, arXiv 2410.07163, eq. 4), as the reference code computes it:

        L = -(2/β) · log σ(β · (-log π_θ(y|x) / |y| - γ))

    the NPO loss with the reference replaced by length normalisation and a margin γ. The code puts
    γ inside β·(...) (the paper writes -(β/|y|) log π_θ - γ); identical at the default γ = 0. [B]
    """
    length = mask.sum(dim=1).clamp_min(1)
    mean_nll = -sequence_logprob(logp, mask) / length
    return -(2.0 / beta) * F.logsigmoid(beta * (mean_nll - gamma))


def dpo(
    win_logp: torch.Tensor,
    win_mask: torch.Tensor,
    win_ref_logp: torch.Tensor,
    lose_logp: torch.Tensor,
    lose_mask: torch.Tensor,
    lose_ref_logp: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, eq. 7) scaled by 2/β as in NPO's and open-unlearning's IdkDPO:

        L = -(2/β) · log σ(β · [log π_θ(y_w|x)/π_ref(y_w|x) - log π_θ(y_l|x)/π_ref(y_l|x)])

    Row b of the win tensors and row b of the lose tensors answer the same prompt. [B]
    """
    win = sequence_logprob(win_logp, win_mask) - sequence_logprob(win_ref_logp, win_mask)
    lose = sequence_logprob(lose_logp, lose_mask) - sequence_logprob(lose_ref_logp, lose_mask)
    return -(2.0 / beta) * F.logsigmoid(beta * (win - lose))


def position_undial(
    logits: torch.Tensor, ref_logits: torch.Tensor, targets: torch.Tensor, beta: float
) -> torch.Tensor:
    """UNDIAL's cross-entropy at each position: CE(softmax(z_ref - β·onehot(y)), softmax(z_θ)).

    logits, ref_logits [..., V], targets [...] -> [...]; fp32 (see `undial`).
    """
    index = targets.unsqueeze(-1)
    lowered = torch.full(index.shape, -beta, dtype=torch.float32, device=ref_logits.device)
    adjusted = ref_logits.float().scatter_add(-1, index, lowered)
    teacher = F.softmax(adjusted, dim=-1)
    return -(teacher * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1)


def undial(
    logits: torch.Tensor, ref_logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """UNDIAL (Dong et al. 2025, arXiv 2402.10052, eq. 2-3): self-distillation from adjusted logits.

        z'_t = z_ref,t - β · onehot(y_t),   L = (1/|y|) Σ_t CE(softmax(z'_t), softmax(z_θ,t))

    The teacher is the original model with the target token's logit lowered by β; the student
    matches that soft distribution over every vocabulary entry. logits, ref_logits [B, T-1, V]
    are aligned with targets and mask [B, T-1]; averaged over answer positions only (the
    reference code also averaged over prompt and padding). fp32. [B]
    """
    return token_mean(position_undial(logits, ref_logits, targets, beta), mask)


def activation_mse(hidden: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMU's distance (Li et al. 2024, WMDP, arXiv 2403.03218, eq. 1-2), per example:

        (1/|t|) Σ_t (1/D) ‖h_t - target_t‖²

    hidden [B, T, D]; target [D] (the forget term's c·u) or [B, T, D] (the frozen model's
    activations, for the retain term); mask [B, T] of real tokens. The mean over D is the
    reference code's `mse_loss`; the sum over t skips padding (the code averaged padding in too).
    Both sides are cast to fp32 first: in bf16/fp16 the squared norms overflow (WMDP issue #13). [B]
    """
    squared = (hidden.float() - target.float()).pow(2).mean(dim=-1)
    mask = mask.to(squared.dtype)
    return (squared * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)
