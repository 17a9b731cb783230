"""Seconds per step and peak memory of each method's step next to a plain LoRA fine-tuning step.

For every method (or `--method NAME`), three configurations see the same rows (those the method's
terms need: forget, random-answer, refusal, normal), batched as the engine batches them (per kind of
rows, rows that share a prompt packed: core/training/step.py): `plain` is one NLL over every row's
answer (plain LoRA fine-tuning over the same tokens), `live` is the method's step with an
inference-mode reference forward where it needs one (the adapter disabled), `cached` the same step
reading the reference's outputs from a cache built before timing (`train.cache_reference`). All run
AdamW. Each configuration runs in its own process so its peak RSS is its own. With `--yao` the
reference implementation's step (../shared/bench/yao_step.py: two full models, separate passes) is
timed too, and the ratio of our `yao` step to it is printed.

    python bench/unlearn_step.py --model tiny-llama
    python bench/unlearn_step.py --model smollm2-135m-instruct --method yao --yao
    python bench/unlearn_step.py --model smollm2-135m-instruct --yao --threads 1 --clock cpu

`--clock cpu` times each step in CPU seconds of its process (one thread), which other processes
sharing the cores do not inflate; `positions` is the tokens the model runs over per step (every
forward, a live reference's included), `kind_positions` those of one batch per kind of rows.
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

WORDS = (
    "the a of to and in is it you that he was for on are with as his they be at one have this "
    "from or had by hot word but what some we can out other were all there when up use your how "
    "said an each she which do their time if will way about many then them write would like"
).split()


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def synthetic_data(batch: int, rng: random.Random, forget_words: int = 80):
    """PKU-like forget pairs (long answers) and TruthfulQA-like normal pairs, as in yao_step.py."""
    from lethe.core.data.examples import Example

    forget = [
        Example(f"f{i}", _text(rng, rng.randint(12, 24)), _text(rng, forget_words)) for i in range(batch)
    ]
    normal = [
        Example(f"n{i}", _text(rng, rng.randint(6, 18)), _text(rng, rng.randint(3, 18)))
        for i in range(batch * 4)
    ]
    return forget, normal


def build(args: argparse.Namespace):
    """The model, the terms of `args.impl`, one packed batch with its slices and keys, and the
    reference source (none, live or cached)."""
    from lethe.core.data.examples import load_examples
    from lethe.core.data.tokens import collate, pad_id_of
    from lethe.core.methods import METHODS, Term, default_refusals, nll, terms_for
    from lethe.core.models.loading import load_model
    from lethe.core.models.lora import attach_lora
    from lethe.core.models.reference import Reference
    from lethe.core.spec.fields import LoraSpec, ModelSpec, PromptFormat
    from lethe.core.training.refcache import LiveReference, build_cache
    from lethe.core.training.rows import StageData, encode_rows, micro_batch_rows, row_kinds
    from lethe.core.training.step import enable_gradient_checkpointing, steered_layer, wanted_reference

    model, tok = load_model(ModelSpec(name=args.model, device="cpu"))
    model = attach_lora(
        model, LoraSpec(rank=args.lora_r, alpha=2 * args.lora_r, target_modules=["q_proj", "v_proj"])
    )
    ref = {"source": "unused.jsonl"}
    params: dict = {"forget": ref, "normal": ref, "train": {"steps": 1}}
    if args.method == "yao":
        params["random_answers"] = args.random_answers
    terms = terms_for(METHODS[args.method].stage(**params))
    forget, normal = synthetic_data(args.batch, random.Random(8888), args.forget_words)
    refusals = [e.prompt for e in load_examples(default_refusals())]
    data = StageData(forget=forget, normal=normal, random_answers=args.random_answers, refusals=refusals)
    fmt = PromptFormat(max_length=args.seq)
    rows = micro_batch_rows(data, row_kinds(terms), 0, args.batch, seed=0)
    encoded, slices, keys = encode_rows(tok, fmt, rows)
    batch = collate(encoded, pad_id_of(tok))
    wanted = wanted_reference(terms)
    source = LiveReference(Reference(model)) if wanted and args.impl != "plain" else None
    if args.impl == "cached" and source is not None:
        source = build_cache(
            source,
            tok,
            fmt,
            {k: rows[k] for k in wanted},
            wanted,
            steered_layer(model, terms),
            batch_size=args.batch * 8,
            device=torch_device(model),
        )
    if args.impl == "plain":  # one NLL per kind of rows: the same rows and batches, no reference
        terms, keys = [Term(f"nll_{kind}", kind, 1.0, nll("mean")) for kind in slices], None
    if args.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model, terms, batch, slices, keys, source


def torch_device(model):
    return next(model.parameters()).device


def run_one(args: argparse.Namespace) -> dict:
    import torch

    from lethe.core.training.refcache import kind_batches
    from lethe.core.training.step import micro_batch_loss

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, terms, batch, slices, keys, source = build(args)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()
    # cpu: this process's CPU seconds, which other processes sharing the cores do not inflate
    # (one thread per process); wall: elapsed seconds
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    # tokens through the model per step (every forward, a live reference's included)
    seen: list[int] = []
    model.get_input_embeddings().register_forward_hook(lambda _m, a, _o: seen.append(a[0].numel()))
    times = []
    for _ in range(args.steps):
        seen.clear()
        start = clock()
        micro_batch_loss(model, source, terms, batch, slices, keys, backward=1.0)  # as the engine does
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(clock() - start)
    timed = times[1:]  # the first step is a warm-up
    kinds = kind_batches(batch, slices)
    return {
        "impl": args.impl,
        "method": args.method,
        "model": args.model,
        "tokens": int(batch["attention_mask"].sum()),
        "rows": int(batch["input_ids"].shape[0]),
        # positions the model runs over (padding included; packed rows count once per prompt)
        "positions": sum(seen),
        "kind_positions": sum(int(k["input_ids"].numel()) for k in kinds.values()),
        "s_per_step_median": round(statistics.median(timed), 4),
        "s_per_step_min": round(min(timed), 4),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "reference": type(source).__name__ if source is not None else "none",
    }


def _child(args: argparse.Namespace, method: str, impl: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--one",
        impl,
        "--model",
        args.model,
        "--method",
        method,
        "--batch",
        str(args.batch),
        "--seq",
        str(args.seq),
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
        "--lora-r",
        str(args.lora_r),
        "--random-answers",
        str(args.random_answers),
        "--forget-words",
        str(args.forget_words),
        "--clock",
        args.clock,
        *(["--gradient-checkpointing"] if args.gradient_checkpointing else []),
    ]
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

        from lethe.core.models.loading import prepare

        env = {**os.environ, "LETHE_SMOLLM2_DIR": str(prepare("smollm2-135m-instruct"))}
    # the reference script times with time.perf_counter; under --clock cpu it reads CPU time instead
    patch = "import runpy, sys, time; time.perf_counter = time.process_time; "
    run = f"sys.argv[0] = {str(script)!r}; runpy.run_path(sys.argv[0], run_name='__main__')"
    launcher = ["-c", patch + run] if args.clock == "cpu" else [str(script)]
    cmd = [
        sys.executable,
        *launcher,
        "--model",
        kind,
        "--lora",
        "--lora-r",
        str(args.lora_r),
        "--batch",
        str(args.batch),
        "--seq",
        str(args.seq),
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def _needs_reference(method: str) -> bool:
    from lethe.core.methods import METHODS, terms_for

    ref = {"source": "unused.jsonl"}
    return any(
        t.needs_reference
        for t in terms_for(METHODS[method].stage(forget=ref, normal=ref, train={"steps": 1}))
    )


def table(results: list[dict]) -> str:
    """Markdown: one line per method, plain / live / cached seconds per step and peak RSS."""
    lines = [
        (
            "| method | rows | tokens | positions | plain s/step | live s/step | cached s/step | "
            "live/plain | cached/plain | peak RSS plain / live / cached (GB) |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_method: dict[str, dict[str, dict]] = {}
    for row in results:
        by_method.setdefault(row["method"], {})[row["impl"]] = row
    for method, rows in by_method.items():
        plain, live, cached = rows["plain"], rows["live"], rows.get("cached")
        base = plain["s_per_step_median"]
        cells = [
            method,
            live["rows"],
            live["tokens"],
            live.get("positions", "-"),
            base,
            live["s_per_step_median"],
            cached["s_per_step_median"] if cached else "-",
            f"{live['s_per_step_median'] / base:.2f}",
            f"{cached['s_per_step_median'] / base:.2f}" if cached else "-",
            f"{plain['peak_rss_gb']} / {live['peak_rss_gb']} / {cached['peak_rss_gb'] if cached else '-'}",
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def versus_reference(results: list[dict], yao: dict) -> dict:
    """Our yao step (live, cached) over the reference implementation's, and live over plain."""
    ours = {r["impl"]: r for r in results if r["method"] == "yao"}
    out = {}
    for impl in ("live", "cached"):
        if impl in ours:
            out[f"{impl}_over_yao"] = round(ours[impl]["s_per_step_median"] / yao["s_per_step_median"], 3)
            out[f"rss_{impl}_over_yao"] = round(ours[impl]["peak_rss_gb"] / yao["peak_rss_gb"], 3)
    out["live_over_plain"] = round(ours["live"]["s_per_step_median"] / ours["plain"]["s_per_step_median"], 3)
    return out


def main() -> None:
    from lethe.core.methods import METHODS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--method", default="all", help="a method name, or all")
    parser.add_argument("--batch", type=int, default=2, help="forget prompts per step (and normal rows)")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6, help="steps to time; the first is a warm-up")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lora-r", type=int, default=32)
    parser.add_argument("--random-answers", type=int, default=5, help="K; Yao's code uses 5")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="wall", help="cpu: process CPU seconds")
    parser.add_argument("--forget-words", type=int, default=80, help="words per forget answer")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="train.gradient_checkpointing")
    parser.add_argument("--yao", action="store_true", help="also time ../shared/bench/yao_step.py")
    parser.add_argument("--one", choices=["plain", "live", "cached"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        args.impl = args.one
        print(json.dumps(run_one(args)))
        return
    methods = list(METHODS) if args.method == "all" else [args.method]
    results = []
    for method in methods:
        impls = ["plain", "live"] + (["cached"] if _needs_reference(method) else [])
        results += [_child(args, method, impl) for impl in impls]
    for row in results:
        print(json.dumps(row))
    print(table(results))
    yao = _yao(args) if args.yao and "yao" in methods else None
    if yao:
        print(json.dumps(yao))
        print(json.dumps(versus_reference(results, yao)))


if __name__ == "__main__":
    main()
