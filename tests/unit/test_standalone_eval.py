"""`lethe eval`: a finished run's adapter, or any of its training checkpoints, measured on the
spec's evaluation sets with the judge trained as the job trains it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from toy_data import tiny_spec_data

from lethe.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("eval")
    data = tiny_spec_data()  # absolute sources: the spec is copied out of examples/
    data["unlearn"]["train"].update(checkpoint_every=3)
    spec = folder / "tiny.yaml"
    spec.write_text(yaml.safe_dump(data))
    assert main(["unlearn", str(spec), "--out", str(folder / "run"), "--quiet"]) == 0
    return spec, folder / "run"


def _metrics(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["eval", *args]) == 0
    return json.loads(capsys.readouterr().out)["metrics"]


def test_the_adapter_and_the_last_checkpoint_give_the_runs_after_metrics(finished_run, capsys):
    spec, run = finished_run
    after = json.loads((run / "metrics.json").read_text())["after"]
    from_adapter = _metrics(capsys, str(spec), "--adapter", str(run / "adapter"))
    from_checkpoint = _metrics(
        capsys, str(spec), "--checkpoint", str(run / "checkpoints" / "unlearn" / "final")
    )
    # benign similarity compares with the run's answers before unlearning, which eval does not have
    shared = [k for k, v in after.items() if isinstance(v, float) and k in from_adapter]
    assert {"forget_nll", "normal_ppl", "harmful_rate", "over_refusal"} <= set(shared)
    for key in shared:
        assert from_adapter[key] == pytest.approx(after[key], rel=1e-4), key
        assert from_checkpoint[key] == pytest.approx(after[key], rel=1e-4), key


def test_several_checkpoints_are_measured_one_by_one_with_one_judge(finished_run, capsys):
    spec, run = finished_run
    folder = run / "checkpoints" / "unlearn"
    last = _metrics(capsys, str(spec), "--checkpoint", str(folder / "final"))
    earlier = _metrics(capsys, str(spec), "--checkpoint", str(folder / "step-0000003"))
    assert earlier["forget_nll"] != pytest.approx(last["forget_nll"], rel=1e-5)  # another model (noise ~1e-7)
    assert (
        main(
            [
                "eval",
                str(spec),
                "--checkpoint",
                str(folder / "step-0000003"),
                "--checkpoint",
                str(folder / "final"),
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)["checkpoints"]
    assert [Path(r["checkpoint"]).name for r in rows] == ["step-0000003", "final"]
    assert rows[0]["metrics"]["forget_nll"] == pytest.approx(earlier["forget_nll"], rel=1e-5)
    assert rows[1]["metrics"]["forget_nll"] == pytest.approx(last["forget_nll"], rel=1e-5)


def test_a_folder_that_is_no_checkpoint_is_refused_in_one_line(finished_run, capsys):
    spec, run = finished_run
    assert main(["eval", str(spec), "--checkpoint", str(run / "adapter")]) != 0
    err = capsys.readouterr().err.strip()
    assert "is not a Lethe checkpoint" in err and len(err.splitlines()) == 1
