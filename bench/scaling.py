"""Step time and peak memory of the `yao` step against sequence length, batch size and LoRA rank.

Each point is one `bench/unlearn_step.py --one live` process (so its peak RSS is its own): the
`yao` step with a live reference on synthetic rows whose forget answers fill the sequence length,
one random answer per forget prompt (the spec's default) and short normal rows. Three sweeps
around a base point (sequence 256, batch 1, rank 32): sequence length, batch size, LoRA rank.
Writes docs/scaling.csv and, when matplotlib is installed, docs/scaling.png.

    python bench/scaling.py                                  # tiny-llama and SmolLM2 (minutes)
    python bench/scaling.py --quick                          # 2 points per sweep, 2 steps each
    python bench/scaling.py --models tiny-llama --seqs 128 1024 --clock wall
    python bench/scaling.py --estimate                       # 1B / 7B on one GPU, by arithmetic
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs"
FIELDS = ["model", "sweep", "seq", "batch", "rank", "tokens", "positions", "s_per_step", "peak_rss_gb"]
BASE = {"seq": 256, "batch": 1, "rank": 32}


def points(seqs: list[int], batches: list[int], ranks: list[int]) -> list[tuple[str, dict[str, int]]]:
    """(sweep, config) for each sweep around BASE; a config shared by sweeps is listed once each."""
    out = [("seq", {**BASE, "seq": s}) for s in seqs]
    out += [("batch", {**BASE, "batch": b}) for b in batches]
    out += [("rank", {**BASE, "rank": r}) for r in ranks]
    return out


def measure(model: str, config: dict[str, int], steps: int, clock: str) -> dict:
    """One `unlearn_step.py --one live` process: the yao step at this configuration."""
    cmd = [
        sys.executable,
        str(HERE / "unlearn_step.py"),
        "--one",
        "live",
        "--method",
        "yao",
        "--model",
        model,
        "--seq",
        str(config["seq"]),
        "--batch",
        str(config["batch"]),
        "--lora-r",
        str(config["rank"]),
        "--random-answers",
        "1",
        "--forget-words",
        str(config["seq"]),  # truncated at the sequence length: the forget rows fill it
        "--steps",
        str(steps),
        "--threads",
        "1",
        "--clock",
        clock,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> list[dict]:
    rows: list[dict] = []
    seen: dict[tuple, dict] = {}
    for model in args.models:
        for sweep, config in points(args.seqs, args.batches, args.ranks):
            key = (model, config["seq"], config["batch"], config["rank"])
            if key not in seen:  # the base point belongs to every sweep; measure it once
                seen[key] = measure(model, config, args.steps, args.clock)
            found = seen[key]
            row = {
                "model": model,
                "sweep": sweep,
                **config,
                "tokens": found["tokens"],
                "positions": found["positions"],
                "s_per_step": found["s_per_step_median"],
                "peak_rss_gb": found["peak_rss_gb"],
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def plot(rows: list[dict], path: Path) -> bool:
    """Seconds per step (top) and peak RSS (bottom) against each swept variable; False without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on a server
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sweeps = [("seq", "sequence length (tokens)"), ("batch", "batch (forget prompts)"), ("rank", "LoRA rank")]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), squeeze=False)
    for col, (sweep, label) in enumerate(sweeps):
        for model in sorted({r["model"] for r in rows}):
            line = sorted(
                (r for r in rows if r["model"] == model and r["sweep"] == sweep), key=lambda r: r[sweep]
            )
            xs = [r[sweep] for r in line]
            axes[0][col].plot(xs, [r["s_per_step"] for r in line], marker="o", label=model)
            axes[1][col].plot(xs, [r["peak_rss_gb"] for r in line], marker="o", label=model)
        for row, ylabel in enumerate(("s / step", "peak RSS (GB)")):
            axes[row][col].set_xscale("log", base=2)
            axes[row][col].set_yscale("log")  # the tiny model and SmolLM2 differ 100-fold
            axes[row][col].set_xlabel(label)
            axes[row][col].set_ylabel(ylabel)
            axes[row][col].grid(alpha=0.3)
    axes[0][0].legend()
    fig.suptitle("yao step (live reference), one CPU thread; base point: seq 256, batch 1, rank 32")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


# ------------------------------------------------------------------ 1B / 7B on one GPU: arithmetic
# (non-embedding parameters, hidden size, layers, vocabulary) of two public models
MODELS = {
    "Llama-3.2-1B": (0.973e9, 2048, 16, 128_256),
    "Llama-2-7B": (6.48e9, 4096, 32, 32_000),
}


def estimate(
    batch: int = 8, seq: int = 512, prompt: int = 64, answer: int = 32, tflops: float = 400.0
) -> list[dict]:
    """Estimated seconds and GPU memory of one `yao` step (LoRA r=32 on attention, bf16 weights):
    `batch` forget rows of `seq` tokens (prompt `prompt`), one random answer of `answer` tokens per
    prompt (packed with it), `batch` normal rows of 2·answer tokens; `tflops`: sustained bf16
    throughput (about 40 % of an H100's dense peak). FLOPs: 4·N per trained token (forward, and
    backward to the inputs: frozen weights get no gradient), 2·N per reference token, 2·D·V per
    scored position three times (forward, recompute, backward). Memory: bf16 weights, ~34·D bytes
    of activations per token and layer (Korthikanti et al. 2022, no attention matrix kept by SDPA)
    for the largest group of kinds, 2·D per token and layer plus one layer's with checkpointing."""
    trained = batch * (seq + answer) + batch * 2 * answer  # packed forget+random trees, normal rows
    largest = batch * (seq + answer)
    scored = batch * (seq - prompt + answer + answer)
    out = []
    for name, (params, dim, layers, vocab) in MODELS.items():
        flops = 4 * params * trained + 2 * params * batch * 2 * answer + 3 * 2 * dim * vocab * scored
        weights = 2 * (params + dim * vocab) / 1e9
        activations = 34 * dim * layers * largest / 1e9
        checkpointed = 2 * dim * layers * largest / 1e9 + 34 * dim * largest / 1e9
        extra = 0.5 + 3 * 4 * 2**23 / 1e9  # LoRA + AdamW states, head chunks, allocator slack (GB)
        out.append(
            {
                "model": name,
                "tokens_per_step": trained,
                "tflop_per_step": round(flops / 1e12, 1),
                "s_per_step_est": round(flops / (tflops * 1e12), 2),
                "gpu_gb_est": round(weights + activations + extra, 1),
                "gpu_gb_est_checkpointing": round(weights + checkpointed + extra, 1),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny-llama", "smollm2-135m-instruct"])
    parser.add_argument("--seqs", nargs="+", type=int, default=[128, 256, 512, 1024])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--ranks", nargs="+", type=int, default=[8, 32, 128])
    parser.add_argument("--steps", type=int, default=3, help="steps per point; the first is a warm-up")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="cpu: process CPU seconds")
    parser.add_argument("--quick", action="store_true", help="2 points per sweep, 2 steps each")
    parser.add_argument("--out", type=Path, default=DOCS, help="folder for scaling.csv and scaling.png")
    parser.add_argument("--replot", action="store_true", help="redraw scaling.png from scaling.csv")
    parser.add_argument("--estimate", action="store_true", help="print the 1B/7B one-GPU estimates only")
    args = parser.parse_args()
    if args.replot:  # the plot again from an earlier run's CSV
        with (args.out / "scaling.csv").open(encoding="utf-8") as handle:
            rows = [
                {k: v if k in ("model", "sweep") else float(v) for k, v in r.items()}
                for r in csv.DictReader(handle)
            ]
        plot(rows, args.out / "scaling.png")
        return
    if args.estimate:
        for row in estimate():
            print(json.dumps(row))
        return
    if args.quick:
        args.seqs, args.batches, args.ranks, args.steps = [128, 512], [1, 2], [8, 32], 2
    rows = run(args)
    write_csv(rows, args.out / "scaling.csv")
    if plot(rows, args.out / "scaling.png"):
        print(f"wrote {args.out / 'scaling.csv'} and {args.out / 'scaling.png'}")
    else:
        print(f"wrote {args.out / 'scaling.csv'} (no matplotlib: no plot)")


if __name__ == "__main__":
    main()
