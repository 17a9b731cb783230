"""The fast step computes what the plain one would (tiny model built in code, CPU, seconds).

The step (core/training/step.py) cuts each kind of rows at its own width, packs the rows that share
a prompt into one sequence (packing.py), runs the output layer at answer positions only, in
checkpointed chunks, back-propagates one group of kinds at a time, and runs the reference under
inference_mode. The plain step written out here is the obvious one it replaced: ONE forward over
every row padded to the longest, full logits [B, T, V] at every position, each term's loss on its
slice. For every method, with chunks of 3 positions (so several chunks, checkpointed) and with one
chunk, the losses and the gradients must agree within float tolerance; gradient checkpointing must
not change them either.
"""

from __future__ import annotations

import pytest
import torch
from test_methods_contract import REFUSALS, fresh_model, grads, method_stage
from toy_data import FMT, FORGET, NORMAL

from lethe.core.data.tokens import collate, pad_id_of
from lethe.core.methods import METHODS, Term, TermInputs, terms_for
from lethe.core.methods.losses import sequence_nll, shift_labels, token_logprobs
from lethe.core.models.hidden import forward as layer_forward
from lethe.core.models.hidden import forward_split, output_logits
from lethe.core.models.reference import Reference
from lethe.core.training.rows import StageData, encode_rows, micro_batch_rows, row_kinds
from lethe.core.training.step import enable_gradient_checkpointing, micro_batch_loss, steered_layer


def plain_loss(model, reference: Reference, terms: list[Term], batch, slices):
    """The plain step: one padded forward with full logits, each term on its rows' slice."""
    ids, att, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    layer = steered_layer(model, terms)
    logits, hidden = layer_forward(
        lambda i, a: model(input_ids=i, attention_mask=a).logits, model, ids, att, layer, need_logits=True
    )
    ref_logits, ref_hidden = layer_forward(reference.logits, reference.module, ids, att, layer, True)
    targets, mask = shift_labels(labels)
    logp, ref_logp = token_logprobs(logits, labels)[0], token_logprobs(ref_logits, labels)[0]

    def inputs(kind, term=None) -> TermInputs:
        sl = slices[kind]
        positions = None
        if term is not None and term.position_loss is not None:
            positions = term.position_loss(logits[sl, :-1], ref_logits[sl, :-1], targets[sl])
        return TermInputs(
            logp=logp[sl],
            mask=mask[sl],
            targets=targets[sl],
            ref_logp=ref_logp[sl],
            positions=positions,
            hidden=hidden[sl] if hidden is not None else None,
            ref_hidden=ref_hidden[sl] if ref_hidden is not None else None,
            tokens=att[sl].bool(),
            pair=inputs(term.pair) if term is not None and term.pair is not None else None,
        )

    total, values = torch.zeros(()), {}
    for term in terms:
        value = term.loss(inputs(term.rows, term)).mean()
        total = total + term.weight * value
        values[term.name] = float(value.detach())
    if all(t.reads == "logits" for t in terms) and "forget" in slices:
        forget = slices["forget"]
        values["forget_nll"] = float(sequence_nll(logp[forget].detach(), mask[forget]).mean())
    return total, values


def _rows(tok, name: str):
    terms = terms_for(method_stage(name))
    rows = micro_batch_rows(StageData(FORGET, NORMAL, refusals=REFUSALS), row_kinds(terms), 0, 3, seed=1)
    encoded, slices, keys = encode_rows(tok, FMT, rows)
    return terms, collate(encoded, pad_id_of(tok)), slices, keys


def _nudge(model) -> None:
    """Move the adapter off zero, so the trained model and the reference differ (KL > 0)."""
    with torch.no_grad():
        for pname, param in model.named_parameters():
            if "lora_B" in pname:
                param.copy_(
                    0.05 * torch.randn(param.shape, generator=torch.Generator().manual_seed(len(pname)))
                )


def _loss_and_grads(model, run):
    model.zero_grad()
    loss, values = run()
    loss.backward()
    return float(loss.detach()), values, grads(model)


def _assert_same(found, expected) -> None:
    assert found[0] == pytest.approx(expected[0], rel=1e-5, abs=1e-6)
    assert found[1].keys() == expected[1].keys()
    for key, value in expected[1].items():
        assert found[1][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    for pname, grad in expected[2].items():
        if grad is None:
            assert found[2][pname] is None or not found[2][pname].any(), pname
        else:
            torch.testing.assert_close(found[2][pname], grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("chunk", [3, None], ids=["chunks-of-3", "one-chunk"])
def test_the_fast_step_gives_the_plain_steps_losses_and_gradients(name, chunk):
    model, tok = fresh_model()
    _nudge(model)
    model.train()
    reference = Reference(model)
    terms, batch, slices, keys = _rows(tok, name)
    expected = _loss_and_grads(model, lambda: plain_loss(model, reference, terms, batch, slices))
    found = _loss_and_grads(
        model, lambda: micro_batch_loss(model, reference, terms, batch, slices, keys, chunk_positions=chunk)
    )
    _assert_same(found, expected)


@pytest.mark.parametrize("name", ["yao", "undial"])
def test_chunked_output_layer_passes_gradients_to_a_trained_output_layer(name):
    """Full fine-tuning trains the output layer too: the checkpointed chunks must reach it."""
    model, tok = fresh_model(lora=False)
    reference = Reference(model)
    terms, batch, slices, keys = _rows(tok, name)
    with torch.no_grad():  # make the trained model differ from its frozen copy
        model.get_output_embeddings().weight.mul_(1.1)
    expected = _loss_and_grads(model, lambda: plain_loss(model, reference, terms, batch, slices))
    found = _loss_and_grads(
        model, lambda: micro_batch_loss(model, reference, terms, batch, slices, keys, chunk_positions=4)
    )
    assert found[2]["lm_head.weight"] is not None
    _assert_same(found, expected)


@pytest.mark.parametrize("name", ["yao", "rmu", "idk_dpo"])
def test_gradient_checkpointing_changes_nothing(name):
    model, tok = fresh_model()
    _nudge(model)
    model.train()
    reference = Reference(model)
    terms, batch, slices, keys = _rows(tok, name)
    expected = _loss_and_grads(model, lambda: micro_batch_loss(model, reference, terms, batch, slices, keys))
    enable_gradient_checkpointing(model)
    found = _loss_and_grads(model, lambda: micro_batch_loss(model, reference, terms, batch, slices, keys))
    _assert_same(found, expected)


@pytest.mark.parametrize("kind", ["tiny-llama", "tiny-opt", "tiny-gpt2"])
def test_the_split_output_layer_gives_the_models_logits(kind):
    """forward_split + output_logits at chosen positions equals the model's own logits there,
    through a PEFT wrapper and with the adapter disabled by the reference."""
    from lethe.core.models.loading import load_model
    from lethe.core.models.lora import attach_lora
    from lethe.core.spec.fields import LoraSpec, ModelSpec

    base, tok = load_model(ModelSpec(name=kind, device="cpu"))
    model = attach_lora(base, LoraSpec(rank=4, alpha=8))
    _nudge(model)
    _, batch, _, _ = _rows(tok, "yao")
    ids, att = batch["input_ids"], batch["attention_mask"]
    mask = att.bool()
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=att).logits
        at = forward_split(
            lambda i, a: model(input_ids=i, attention_mask=a), model, ids, att, None, lambda h: h[mask]
        )[0]
        torch.testing.assert_close(output_logits(model, at), full[mask], rtol=1e-5, atol=1e-5)
    reference = Reference(model)
    original = reference.logits(ids, att)[mask]
    split = reference.forward_split(ids, att, None, lambda h: output_logits(reference.module, h[mask]))[0]
    torch.testing.assert_close(split, original, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(original, full[mask])  # the adapter was moved: the two differ


@pytest.mark.parametrize("name", ["yao", "idk_dpo"])
def test_rows_that_share_a_prompt_run_it_once_and_give_the_plain_losses(name):
    """Forget, random (K = 3 here) and idk rows answering one prompt are packed into one sequence
    (packing.py): fewer tokens go through the model, and the losses and gradients stay those of
    the plain step."""
    model, tok = fresh_model()
    _nudge(model)
    model.train()
    reference = Reference(model)
    ref = {"source": "unused.jsonl"}
    extra = {"random_answers": 3} if name == "yao" else {}
    terms = terms_for(METHODS[name].stage(forget=ref, normal=ref, train={"steps": 1}, **extra))
    data = StageData(FORGET, NORMAL, random_answers=3, refusals=REFUSALS)
    encoded, slices, keys = encode_rows(tok, FMT, micro_batch_rows(data, row_kinds(terms), 0, 2, seed=1))
    batch = collate(encoded, pad_id_of(tok))
    expected = _loss_and_grads(model, lambda: plain_loss(model, reference, terms, batch, slices))
    embedded: dict[bool, int] = {}
    for packed in (False, True):
        seen: list[int] = []
        hook = model.base_model.model.model.embed_tokens.register_forward_hook(
            lambda _m, args, _o, seen=seen: seen.append(args[0].numel())
        )
        found = _loss_and_grads(
            model,
            lambda packed=packed: micro_batch_loss(
                model, reference, terms, batch, slices, keys, pack_prompts=packed
            ),
        )
        hook.remove()
        embedded[packed] = sum(seen)
        _assert_same(found, expected)
    assert embedded[True] < embedded[False]


def test_backward_inside_the_step_gives_the_same_gradient():
    """`backward=` (what the engine uses: one group of kinds back-propagated at a time) equals one
    backward of the returned total."""
    model, tok = fresh_model()
    _nudge(model)
    model.train()
    reference = Reference(model)
    terms, batch, slices, keys = _rows(tok, "idk_dpo")
    expected = _loss_and_grads(model, lambda: micro_batch_loss(model, reference, terms, batch, slices, keys))
    model.zero_grad()
    loss, values = micro_batch_loss(model, reference, terms, batch, slices, keys, backward=1.0)
    assert not loss.requires_grad
    _assert_same((float(loss), values, grads(model)), expected)


def test_the_gradient_checkpointing_option_trains_the_same_weights():
    """`train.gradient_checkpointing: true` in a spec: two steps of run_stage, same adapter."""
    from test_methods_contract import stage_of, trainable

    from lethe.core.training.engine import run_stage

    finals = []
    for on in (False, True):
        model, tok = fresh_model()
        method = method_stage("yao", steps=2, gradient_checkpointing=on)
        run_stage(model, tok, stage_of(method), reference=Reference(model))
        finals.append(trainable(model))
    for pname, value in finals[0].items():
        torch.testing.assert_close(finals[1][pname], value, rtol=1e-5, atol=1e-7)


def test_a_batch_whose_answers_were_all_cut_off_trains_nothing_and_does_not_fail():
    """max_length can cut every answer of a micro-batch off (long prompts): no token is scored, so
    the step back-propagates nothing instead of calling backward on a constant."""
    model, tok = fresh_model()
    model.train()
    terms, batch, slices, keys = _rows(tok, "ga")
    batch = dict(batch, labels=torch.full_like(batch["labels"], -100))
    model.zero_grad()
    loss, _ = micro_batch_loss(model, Reference(model), terms, batch, slices, keys, backward=1.0)
    assert not loss.requires_grad
    assert all(g is None or not g.any() for g in grads(model).values())
