"""Shared fixtures: a tiny random Llama and a word-level tokenizer, both built in code (offline)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
TINY_WORDS = (
    "### Question: Answer: what is the capital of france paris london city a an and or to in on "
    "how do i make bake bread cake cookies water fire safe help you me can cannot sorry won't "
    "not able provide as ai please tell story about cat dog sun moon river tree red blue green "
    "one two three yes no it was good bad day night book page king queen"
).split()


def build_tiny_tokenizer():
    """A whitespace word-level tokenizer: <pad>=0 <s>=1 </s>=2 <unk>=3, then TINY_WORDS.

    `add_special_tokens=True` prepends <s>, as Llama tokenizers do.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(TINY_SPECIALS + TINY_WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def build_tiny_model(vocab_size: int, seed: int = 0):
    """A 2-layer random Llama (hidden 64) in eval mode; the same weights for the same seed."""
    import transformers

    config = transformers.LlamaConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=vocab_size,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        initializer_range=0.2,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = transformers.LlamaForCausalLM(config)
    return model.eval()


@pytest.fixture
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture
def tiny_model(tiny_tokenizer):
    return build_tiny_model(len(tiny_tokenizer))
