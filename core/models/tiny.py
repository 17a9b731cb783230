"""Tiny random causal LMs built in code with a byte tokenizer: offline models for tests and the smoke
example."""

from __future__ import annotations

from typing import Any

import torch


def byte_tokenizer():
    """A byte-level tokenizer built in code (256 bytes + 4 specials): covers any text, offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(specials + sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    from tokenizers.processors import TemplateProcessing

    core.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def _tiny_config(kind: str, vocab_size: int):
    import transformers

    common: dict[str, Any] = dict(vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if kind == "tiny-llama":
        return transformers.LlamaConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=128,
            max_position_embeddings=1024,
            **common,
        )
    if kind == "tiny-opt":
        return transformers.OPTConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            ffn_dim=128,
            word_embed_proj_dim=64,
            max_position_embeddings=1024,
            dropout=0.0,
            attention_dropout=0.0,
            **common,
        )
    return transformers.GPT2Config(
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=1024,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        **common,
    )


def build_tiny(kind: str) -> tuple[Any, Any]:
    """A tiny random causal LM and its byte tokenizer; the same weights every time (seed 0)."""
    import transformers

    tokenizer = byte_tokenizer()
    config = _tiny_config(kind, len(tokenizer))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config)
    return model.eval(), tokenizer


TINY_MODELS = ("tiny-llama", "tiny-opt", "tiny-gpt2")
