"""The `lethe` command line: `main(argv) -> int`; each subcommand parses, calls the API, prints."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lethe import __version__

Handler = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """A user error: printed as one line `error: ...` with exit code 1."""


# ------------------------------------------------------------------ engine commands
def cmd_validate(args: argparse.Namespace) -> int:
    from lethe.core.run.validate import validate_spec_file

    spec = validate_spec_file(Path(args.spec))
    print(f"ok: {args.spec} (method {spec.unlearn.method}, model {spec.model.name})")
    return 0


def cmd_unlearn(args: argparse.Namespace) -> int:
    from lethe.core.run.pipeline import run_job
    from lethe.core.run.report import before_after_table
    from lethe.core.run.validate import validate_spec_file
    from lethe.core.spec.job import parse_spec

    spec = validate_spec_file(Path(args.spec))
    if args.devices is not None:  # validated again: the devices must share each step evenly
        spec = parse_spec(
            {**spec.model_dump(by_alias=True), "model": {**spec.model.model_dump(), "devices": args.devices}}
        )
    with _progress_bar(quiet=args.quiet) as hooks:
        summary = run_job(spec, Path(args.out), hooks)
    print(before_after_table(summary.metrics))
    print(f"stopped: {summary.stopped_reason}")
    print(f"run folder: {summary.out_dir}")
    from lethe.core.run.report_html import write_report

    print(f"report: {write_report(summary.out_dir)}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from lethe.core.run.evaluate import evaluate_spec
    from lethe.core.run.validate import validate_spec_file

    spec = validate_spec_file(Path(args.spec))
    metrics = evaluate_spec(
        spec, Path(args.adapter) if args.adapter else None, [Path(c) for c in args.checkpoint or []]
    )
    text = json.dumps(metrics, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


def cmd_models_prepare(args: argparse.Namespace) -> int:
    from lethe.core.models.loading import prepare

    print(prepare(args.name))
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from lethe.core.models.loading import BUILTINS, PREPARED, cache_dir

    for name in BUILTINS:
        state = (
            "prepared"
            if name in PREPARED and (cache_dir() / name / "config.json").exists()
            else ("needs `lethe models prepare`" if name in PREPARED else "built in code")
        )
        print(f"{name:24s} {state}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from lethe.core.methods import METHODS

    for method in METHODS.values():
        print(f"{method.name:10s} {method.paper} | reference: {method.reference}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from lethe.core.run.sweep import expand, run_sweep
    from lethe.core.run.validate import validate_spec_file

    spec = validate_spec_file(Path(args.spec))
    variants = expand(spec)  # validates every grid point and the budget before any run
    if args.dry_run:
        for variant in variants:
            print(f"{variant.name}: {variant.overrides}")
        return 0
    run_sweep(spec, Path(args.out))
    print((Path(args.out) / "sweep.md").read_text(encoding="utf-8"), end="")
    print(f"table: {Path(args.out) / 'sweep.csv'}; plot: {Path(args.out) / 'pareto.png'}")
    return 0


# ------------------------------------------------------------------ plumbing
class _progress_bar:
    """A tqdm bar per training stage, fed by the engine's progress callback."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.stage = quiet, ""
        self.bar: Any = None  # a tqdm bar while a stage trains

    def __enter__(self):
        from lethe.core.training.hooks import RunHooks

        return RunHooks(on_stage=self._on_stage, on_progress=self._on_progress)

    def __exit__(self, *exc: Any) -> None:
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _on_stage(self, name: str) -> None:
        self._close()
        if not self.quiet:
            print(f"[{name}]", file=sys.stderr, flush=True)

    def _on_progress(self, p: Any) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        if self.bar is None or self.stage != p.stage:
            self._close()
            self.bar, self.stage = tqdm(total=p.total, desc=p.stage, file=sys.stderr), p.stage
        # `p.step` is the count done so far (a resumed stage starts past 0; evaluation reports a
        # whole batch of examples at once), so the bar moves to it rather than by one
        self.bar.update(p.step - self.bar.n)
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in p.losses.items() if k != "grad_norm"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lethe", description="Make a language model forget.")
    parser.add_argument("--version", action="version", version=f"lethe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("unlearn", help="run a job spec locally and write a run folder")
    p.add_argument("spec")
    p.add_argument("--out", required=True, help="run folder (resumes if it holds this job)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--devices",
        type=int,
        help="data-parallel processes on this machine, one per device (sets model.devices)",
    )
    p.set_defaults(handler=cmd_unlearn)

    p = sub.add_parser("eval", help="evaluate a model (optionally with an adapter) on a spec's eval")
    p.add_argument("spec")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--adapter", help="a PEFT adapter folder to apply to the spec's model")
    which.add_argument(
        "--checkpoint",
        action="append",
        help="a run's training checkpoint (checkpoints/unlearn/step-N) or selection "
        "snapshot (best-step-N.pt); repeat it to measure several with one judge",
    )
    p.add_argument("--out", help="also write the metrics to this JSON file")
    p.set_defaults(handler=cmd_eval)

    p = sub.add_parser("validate", help="check a spec without loading a model")
    p.add_argument("spec")
    p.set_defaults(handler=cmd_validate)

    models = sub.add_parser("models", help="built-in models").add_subparsers(dest="models_cmd", required=True)
    p = models.add_parser("prepare", help="convert a built-in model into a cached checkpoint")
    p.add_argument("name")
    p.set_defaults(handler=cmd_models_prepare)
    models.add_parser("list", help="list built-in models").set_defaults(handler=cmd_models_list)

    sub.add_parser("methods", help="list unlearning methods").set_defaults(handler=cmd_methods)
    p = sub.add_parser("sweep", help="run the spec's sweep grid; write a table and a Pareto plot")
    p.add_argument("spec")
    p.add_argument("--out", required=True, help="folder for the runs, sweep.csv/.md and pareto.png")
    p.add_argument("--dry-run", action="store_true", help="list the grid points and stop")
    p.set_defaults(handler=cmd_sweep)
    from lethe.cli.jobs import add_client_commands  # jobs, datasets, verify, report

    add_client_commands(sub)
    _add_service_commands(sub)
    return parser


def _add_service_commands(sub: Any) -> None:
    try:
        from lethe.cli.service import add_service_commands
    except ImportError:  # the service layer is optional for engine-only installs
        return
    add_service_commands(sub)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that are the user's to fix: printed as one line, exit code 1."""
    from lethe.core.errors import USER_ERRORS

    return (CommandError, *USER_ERRORS)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # library deprecation chatter (transformers/peft) is not the user's to act on
    warnings.filterwarnings("ignore", category=FutureWarning)
    console = logging.StreamHandler()
    console.setLevel(logging.INFO if args.verbose else logging.WARNING)  # run.log gets INFO anyway
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[console])
    try:
        return int(args.handler(args) or 0)
    except user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
