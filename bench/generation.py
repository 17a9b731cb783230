"""Tokens per second of batched generation against one prompt at a time, over the same prompts.

Both paths are `lethe.core.evaluation.generate` (greedy, KV cache, each sequence ends at its end
token): once with `batch_size` 1, once with the batch size asked for. It prints new tokens per
second of each, the speed-up, and whether the greedy answers are identical.

    python bench/generation.py --model tiny-llama
    python bench/generation.py --model smollm2-135m-instruct --prompts 32 --batch-size 16
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from lethe.core.data.examples import load_examples
from lethe.core.evaluation import generate
from lethe.core.models.loading import load_model
from lethe.core.spec.fields import DatasetRef, GenerationConfig, ModelSpec

CHATML = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n{response}"


def timed(model: Any, tokenizer: Any, prompts: list[str], template: str, gen: GenerationConfig):
    start = time.perf_counter()
    answers = generate(model, tokenizer, prompts, template, gen)
    seconds = time.perf_counter() - start
    tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    return answers, tokens / seconds, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(ModelSpec(name=args.model, device="cpu"))
    rows = load_examples(DatasetRef(source="builtin:benign_prompts", schema_="prompts"))
    prompts = [e.prompt for e in rows[: args.prompts]]
    template = CHATML if getattr(tokenizer, "chat_template", None) else "Q: {prompt}\nA: {response}"
    one = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=1)
    many = one.model_copy(update={"batch_size": args.batch_size})
    generate(model, tokenizer, prompts[:2], template, one)  # warm-up
    single, single_tps, single_s = timed(model, tokenizer, prompts, template, one)
    batched, batched_tps, batched_s = timed(model, tokenizer, prompts, template, many)
    same = sum(a == b for a, b in zip(single, batched, strict=True))
    print(
        f"model {args.model}, {len(prompts)} prompts, {args.max_new_tokens} new tokens at most, "
        f"{args.threads} thread(s)"
    )
    print(f"one at a time : {single_tps:8.1f} tokens/s ({single_s:.1f} s)")
    print(f"batch of {args.batch_size:<4} : {batched_tps:8.1f} tokens/s ({batched_s:.1f} s)")
    print(f"speed-up      : {batched_tps / single_tps:8.2f}x")
    print(f"identical greedy answers: {same} of {len(prompts)}")


if __name__ == "__main__":
    main()
