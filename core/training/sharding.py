"""`model.shard: fsdp`: the frozen base model's weights sharded across the data-parallel ranks.

PyTorch FSDP2 (`fully_shard`) on each decoder layer and on the root, as torchtune does: during a
training step a rank holds 1/N of the base weights plus one layer gathered at a time. The
trainable (LoRA) weights are left out of the sharding (`ignored_params`): they are small, so every
rank keeps them whole and distributed.py treats them exactly as without sharding (the same
explicit all-reduce of their gradients, the same broadcast from rank 0, the same optimizer and
checkpoint files), and FSDP, whose managed weights are all frozen, reduces no gradient (none is
summed twice).

Why the weights are gathered outside training steps (`gather`) instead of evaluating sharded:
rank 0 alone evaluates, generates and writes the run folder while the other ranks wait (launch.py);
a sharded forward needs every rank. So each stage trains sharded (`reshard` at its start) and ends
with the whole weights gathered on every rank (`gather`, one collective that every rank reaches at
the same point), after which rank 0's forwards run FSDP's hooks with nothing left to gather: no
collective, no change to the evaluation code. The cost: the whole model must still fit one
device to load and evaluate; sharding frees (N-1)/N of the base weights for the training steps'
activations and batch, not for evaluation. The job's spec refuses what would evaluate in the
middle of a stage on rank 0 alone (checkpoint selection, `select`).

Every rank must run the same sequence of forwards and backwards (each one gathers layers): data-
dependent choices between forwards (packing rows by prompt) are agreed across ranks (`everywhere`).
"""

from __future__ import annotations

import logging
import weakref
from typing import Any, cast

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule, fully_shard

from lethe.core.models.hidden import decoder_layers
from lethe.core.spec.fields import ModelSpec
from lethe.core.training import distributed as dp

log = logging.getLogger(__name__)


def shard_for(spec: ModelSpec, model: Any) -> None:
    """Shard `model` (with its adapter attached) when the spec asks for it and ranks exist, then
    gather it: the stages reshard it (`reshard`), and what comes before them runs on rank 0 alone."""
    if spec.shard != "fsdp" or dp.world_size() == 1:
        return
    trainable = {p for p in model.parameters() if p.requires_grad}
    layers = decoder_layers(model)
    for layer in layers:
        fully_shard(layer, ignored_params=trainable)
    fully_shard(model, ignored_params=trainable)  # the rest: embeddings, final norm, output layer
    # explicit backward prefetch (the layer below; itself for layer 0 and the root: nothing more).
    # FSDP's implicit choice follows the forward order it records, which on rank 0 includes its
    # evaluation forwards alone: the ranks would then gather different layers in backward
    cast(FSDPModule, model).set_modules_to_backward_prefetch([model])
    for below, layer in zip([layers[0], *layers[:-1]], layers, strict=True):
        cast(FSDPModule, layer).set_modules_to_backward_prefetch([cast(FSDPModule, below)])
    log.info(
        "model.shard fsdp: %d decoder layers and the root sharded over %d ranks", len(layers), dp.world_size()
    )
    gather(model)  # initialises FSDP's state (lazy_init), which registers the hooks dropped next
    _keep_state_dicts_local(model)


def _keep_state_dicts_local(model: Any) -> None:
    """Drop FSDP's hooks that reshard every module when a state dict is read or loaded. Ours only
    ever read or load the LoRA weights, which FSDP does not manage, and rank 0 reads them alone
    (adapter, checkpoints) after `gather`: a reshard there would leave it a model that no longer
    runs without the other ranks. FSDP2 keeps these handles in private fields (torch 2.13); the
    entries stay, so its lazy initialisation does not register the hooks again."""
    for module in _fsdp_modules(model):
        group: Any = module._get_fsdp_state()._fsdp_param_group
        if group is None:
            continue
        saving = group._module_to_pre_save_state_dict_hook_handle
        loading = group._module_to_pre_load_state_dict_hook_handle
        if not saving:
            raise RuntimeError("FSDP registered no state-dict hooks: this torch version is not supported")
        for handle in [*saving.values(), *loading.values()]:
            handle.remove()


# sharded models whose whole weights are gathered now (between stages): their forwards gather nothing
_GATHERED: weakref.WeakSet[Any] = weakref.WeakSet()


def gathers_in_forward(model: Any) -> bool:
    """Whether a forward of `model` is a collective: sharded, and not gathered (`gather`)."""
    return isinstance(model, FSDPModule) and model not in _GATHERED


def _fsdp_modules(model: Any) -> list[FSDPModule]:
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def reshard(model: Any) -> None:
    """Back to 1/N of the base weights per rank, each layer gathered only while it runs (no
    collective: every rank drops the parts it does not own)."""
    for module in _fsdp_modules(model):
        module.reshard()
        module.set_reshard_after_forward(True)
    _GATHERED.discard(model)


def gather(model: Any) -> None:
    """The whole base weights on every rank, kept after forwards: a forward then needs no other
    rank (rank 0's evaluation). A collective: every rank calls it at the same point."""
    for module in _fsdp_modules(model):
        module.unshard()
        module.set_reshard_after_forward(False)
    if isinstance(model, FSDPModule):
        _GATHERED.add(model)


def everywhere(model: Any, flag: bool) -> bool:
    """`flag` if any rank has it, while `model` trains sharded (one collective), else `flag`
    itself: a choice that decides how many forwards a rank runs must be the same on every rank.
    Rank 0's forwards alone (evaluation) find the model gathered and call no collective."""
    if not gathers_in_forward(model) or dp.current() is None:
        return flag
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # nccl reduces GPU tensors only
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
