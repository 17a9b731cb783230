"""Seconds per step and peak memory: our unlearning step next to a plain LoRA fine-tuning step.

Both steps see the same packed batch (forget rows, random-answer rows, normal rows) and run
AdamW; ours adds the weighted terms and a no-grad reference forward over the normal rows with the
adapter disabled. Each configuration runs in its own process so peak RSS is its own. With
`--yao` the reference implementation's step (../shared/bench/yao_step.py: two full models,
separate passes) runs in the same invocation, and the ratio to it is printed.

    python bench/unlearn_step.py --model tiny-llama
    python bench/unlearn_step.py --model smollm2-135m-instruct --yao
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

WORDS = ("the a of to and in is it you that he was for on are with as his they be at one have this "
         "from or had by hot word but what some we can out other were all there when up use your how "
         "said an each she which do their time if will way about many then them write would like").split()


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def synthetic_data(batch: int, rng: random.Random):
    """PKU-like forget pairs (long answers) and TruthfulQA-like normal pairs, as in yao_step.py."""
    from lethe.core.data import Example

    forget = [Example(f"f{i}", _text(rng, rng.randint(12, 24)), _text(rng, 80)) for i in range(batch)]
    normal = [Example(f"n{i}", _text(rng, rng.randint(6, 18)), _text(rng, rng.randint(3, 18)))
              for i in range(batch * 4)]
    return forget, normal


def build(model_name: str, lora_rank: int, method: str, batch: int, seq: int, random_answers: int):
    from lethe.core.config import LoraSpec, ModelSpec, PromptFormat
    from lethe.core.methods import METHODS, finetune_terms, terms_for
    from lethe.core.models import Reference, attach_lora, load_model
    from lethe.core.train import StageData, _encode_rows, micro_batch_rows
    from lethe.core.tokens import collate, pad_id_of

    model, tok = load_model(ModelSpec(name=model_name, device="cpu"))
    model = attach_lora(model, LoraSpec(rank=lora_rank, alpha=2 * lora_rank, target_modules=["q_proj", "v_proj"]))
    ref = {"source": "unused.jsonl"}
    params = dict(forget=ref, normal=ref, train={"steps": 1})
    if method == "yao":
        params["random_answers"] = random_answers
    stage = METHODS[method].stage(**params)
    terms = terms_for(stage)
    forget, normal = synthetic_data(batch, random.Random(8888))
    data = StageData(forget=forget, normal=normal, random_answers=random_answers)
    rows = micro_batch_rows(data, {t.rows for t in terms}, 0, batch, seed=0)
    encoded, slices = _encode_rows(tok, PromptFormat(max_length=seq), rows)
    packed = collate(encoded, pad_id_of(tok))
    reference = Reference(model) if any(t.needs_reference for t in terms) else None
    return model, terms, finetune_terms(), packed, slices, reference


def run_one(args: argparse.Namespace) -> dict:
    import torch

    from lethe.core.train import micro_batch_loss

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, terms, ft_terms, batch, slices, reference = build(
        args.model, args.lora_r, args.method, args.batch, args.seq, args.random_answers)
    if args.impl == "plain":  # one NLL over every row of the same packed batch
        terms, slices, reference = ft_terms, {"forget": slice(0, batch["input_ids"].shape[0])}, None
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss, _ = micro_batch_loss(model, reference, terms, batch, slices)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    timed = times[1:]  # the first step is a warm-up
    return {"impl": args.impl, "method": args.method, "model": args.model,
            "tokens": int(batch["attention_mask"].sum()), "rows": int(batch["input_ids"].shape[0]),
            "s_per_step_median": round(statistics.median(timed), 4), "s_per_step_min": round(min(timed), 4),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
            "reference_copies": 0 if reference is None or reference._frozen is None else 1}


def _child(args: argparse.Namespace, impl: str) -> dict:
    cmd = [sys.executable, __file__, "--one", impl, "--model", args.model, "--method", args.method,
           "--batch", str(args.batch), "--seq", str(args.seq), "--steps", str(args.steps),
           "--threads", str(args.threads), "--lora-r", str(args.lora_r),
           "--random-answers", str(args.random_answers)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _yao(args: argparse.Namespace) -> dict | None:
    script = Path(__file__).resolve().parents[1].parent / "shared" / "bench" / "yao_step.py"
    if not script.exists():
        print(f"(no {script}: skipping the reference step)", file=sys.stderr)
        return None
    kind = {"tiny-llama": "tiny-llama", "smollm2-135m-instruct": "smollm2"}.get(args.model)
    if kind is None:
        return None
    env = None
    if kind == "smollm2":
        import os

        from lethe.core.models import prepare

        env = {**os.environ, "LETHE_SMOLLM2_DIR": str(prepare("smollm2-135m-instruct"))}
    cmd = [sys.executable, str(script), "--model", kind, "--lora", "--lora-r", str(args.lora_r),
           "--batch", str(args.batch), "--seq", str(args.seq), "--steps", str(args.steps),
           "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--method", default="yao")
    parser.add_argument("--batch", type=int, default=2, help="forget prompts per step (and normal rows)")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6, help="steps to time; the first is a warm-up")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lora-r", type=int, default=32)
    parser.add_argument("--random-answers", type=int, default=5, help="K; Yao's code uses 5")
    parser.add_argument("--yao", action="store_true", help="also time ../shared/bench/yao_step.py")
    parser.add_argument("--one", choices=["ours", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        args.impl = args.one
        print(json.dumps(run_one(args)))
        return
    ours, plain = _child(args, "ours"), _child(args, "plain")
    results = [ours, plain]
    summary = {"ours_over_plain": round(ours["s_per_step_median"] / plain["s_per_step_median"], 3)}
    yao = _yao(args) if args.yao else None
    if yao:
        results.append(yao)
        summary["ours_over_yao"] = round(ours["s_per_step_median"] / yao["s_per_step_median"], 3)
        summary["rss_ours_over_yao"] = round(ours["peak_rss_gb"] / yao["peak_rss_gb"], 3)
    for row in results:
        print(json.dumps(row))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
