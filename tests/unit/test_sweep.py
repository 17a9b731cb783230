"""`lethe sweep`: the grid, its budget, the Pareto front, and a small sweep on the tiny model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from toy_data import tiny_spec_data

from lethe.cli.main import main
from lethe.core.run.sweep import expand, pareto, run_sweep, shares_before
from lethe.core.spec.job import SpecError, parse_spec

ROOT = Path(__file__).resolve().parents[2]


def tiny(sweep: dict, **extra: object) -> dict:
    return {**tiny_spec_data(), "sweep": sweep, **extra}


def test_the_grid_expands_to_validated_named_specs():
    spec = parse_spec(
        tiny({"grid": {"unlearn.train.lr": [0.001, 0.01], "unlearn.forget_weight": [0.5, 1.0, 2.0]}})
    )
    variants = expand(spec)
    assert [v.name for v in variants] == [f"tiny-{i:02d}" for i in range(1, 7)]
    assert variants[1].overrides == {"unlearn.train.lr": 0.001, "unlearn.forget_weight": 1.0}
    assert variants[1].spec.unlearn.forget_weight == 1.0 and variants[1].spec.sweep is None
    assert shares_before(spec)


def test_a_bad_grid_point_and_an_over_budget_grid_are_refused():
    with pytest.raises(SpecError, match=r"sweep point \{'unlearn.train.lr': -1\}: .*greater than 0"):
        expand(parse_spec(tiny({"grid": {"unlearn.train.lr": [0.01, -1]}})))
    with pytest.raises(SpecError, match="3 runs, over sweep.max_runs=2"):
        expand(parse_spec(tiny({"grid": {"unlearn.train.lr": [1e-3, 2e-3, 3e-3]}, "max_runs": 2})))
    with pytest.raises(SpecError, match="take 18 steps in all, over sweep.max_total_steps=10"):
        expand(parse_spec(tiny({"grid": {"unlearn.train.lr": [1e-3, 2e-3, 3e-3]}, "max_total_steps": 10})))
    assert not shares_before(parse_spec(tiny({"grid": {"seed": [0, 1]}})))
    assert not shares_before(
        parse_spec(tiny({"grid": {"unlearn.normal_answers_from": ["dataset", "model"]}}))
    )


def test_pareto_front_by_hand():
    """(0,5) and (1,1) and (3,0) trade off; (2,2) is beaten by (1,1); (1,3) by (0,5)? no: by (1,1)."""
    points = [(0.0, 5.0), (1.0, 1.0), (2.0, 2.0), (3.0, 0.0), (1.0, 3.0)]
    assert pareto(points) == [0, 1, 3]


def test_a_small_sweep_writes_a_table_and_a_plot(tmp_path):
    sweep = {"grid": {"unlearn.train.lr": [0.005, 0.02], "unlearn.method": ["yao", "npo"]}, "max_runs": 4}
    spec = parse_spec(tiny(sweep, criterion={"objective": "forget_nll", "max_normal_ppl_increase": 0.5}))
    rows = run_sweep(spec, tmp_path)
    assert [r["status"] for r in rows] == ["done"] * 4
    assert {
        "run",
        "unlearn.train.lr",
        "unlearn.method",
        "forget_nll_after",
        "normal_ppl_change",
        "meets",
    } <= set(rows[0])
    with (tmp_path / "sweep.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 4
    assert (tmp_path / "sweep.md").read_text().count("\n") == 6
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    first = json.loads((tmp_path / "runs" / "tiny-01" / "eval_before.json").read_text())
    assert json.loads((tmp_path / "runs" / "tiny-04" / "eval_before.json").read_text()) == first


def test_cli_dry_run_lists_the_grid(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny({"grid": {"unlearn.train.steps": [2, 4]}})))
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "tiny-01: {'unlearn.train.steps': 2}",
        "tiny-02: {'unlearn.train.steps': 4}",
    ]
    path.write_text(yaml.safe_dump(tiny({"grid": {"unlearn.nonsense": [1]}})))
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 1
    assert "sweep point {'unlearn.nonsense': 1}" in capsys.readouterr().err


def test_switching_method_drops_the_previous_methods_parameters():
    from lethe.core.run.sweep import with_method

    yao = {
        "method": "yao",
        "forget": {"source": "f"},
        "forget_weight": 0.5,
        "random_answers": 2,
        "train": {"steps": 3},
    }
    assert with_method(yao, "npo") == {"method": "npo", "forget": {"source": "f"}, "train": {"steps": 3}}
    assert with_method(yao, "npo", keep={"forget_weight"})["forget_weight"] == 0.5
