"""The command line (main(argv) -> int, no sys.argv patching) and spec validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from toy_data import tiny_spec_data

from lethe.cli.main import main
from lethe.core.spec.job import SpecError, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"tiny.yaml", "harmful-smollm2.yaml", "copyright-smollm2.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_shipped_example_validates(path, capsys):
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.startswith("ok:")


def _tiny() -> dict:
    return tiny_spec_data()


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda s: s.update(surprise=1), "surprise: Extra inputs are not permitted"),
        (lambda s: s["unlearn"].update(method="zap"), "does not match any of the expected tags"),
        (
            lambda s: s["unlearn"]["train"].update(lr=-1),
            "unlearn.yao.train.lr: Input should be greater than 0",
        ),
        (lambda s: s["unlearn"]["train"].pop("steps"), "set train.steps or train.epochs"),
        (lambda s: s["unlearn"].pop("normal"), "unlearn.normal is required"),
        (
            lambda s: s["unlearn"].update(forget_weight="lots"),
            "forget_weight: Input should be a valid number",
        ),
        (lambda s: s["format"].update(template="{prompt}"), "template must contain"),
        (lambda s: s["lora"].update(rank=0), "lora.rank: Input should be greater than or equal to 1"),
        (
            lambda s: s["unlearn"]["normal"].update(schema="prompts"),
            "unlearn.normal has schema 'prompts' (no answers): set unlearn.normal_answers_from: model",
        ),
    ],
)
def test_bad_specs_get_one_line_with_the_field_path(mutate, message, tmp_path, capsys):
    spec = _tiny()
    mutate(spec)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_unknown_model_and_missing_data_are_caught_without_loading(tmp_path, capsys):
    spec = _tiny()
    spec["model"]["name"] = "no such model"
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(spec))
    assert main(["validate", str(tmp_path / "a.yaml")]) == 1
    assert "unknown model 'no such model'" in capsys.readouterr().err
    spec = _tiny()
    spec["unlearn"]["forget"]["source"] = "missing.jsonl"
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(spec))
    assert main(["validate", str(tmp_path / "b.yaml")]) == 1
    assert "missing.jsonl" in capsys.readouterr().err


def test_missing_spec_file_and_bad_yaml(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 1
    assert "spec file not found" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("model: [unclosed")
    assert main(["validate", str(tmp_path / "bad.yaml")]) == 1
    assert "not valid YAML" in capsys.readouterr().err


def test_relative_sources_are_resolved_against_the_spec_folder():
    spec = load_spec(ROOT / "examples" / "tiny.yaml")
    assert spec.unlearn.forget.source == str(ROOT / "examples" / "data" / "tiny_forget.jsonl")


def test_parse_spec_rejects_non_mappings():
    with pytest.raises(SpecError, match="must be a mapping"):
        parse_spec(["model"])


def test_methods_lists_each_method_with_paper_and_reference(capsys):
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == [
        "yao",
        "ga",
        "graddiff",
        "npo",
        "simnpo",
        "idk",
        "idk_dpo",
        "rmu",
        "undial",
    ]
    assert all("arXiv" in line and "reference:" in line for line in lines)


def test_models_prepare_refuses_a_model_that_needs_no_preparation(capsys):
    assert main(["models", "prepare", "tiny-llama"]) == 1
    assert "needs no preparation" in capsys.readouterr().err


def test_unlearn_prints_a_before_after_table(tmp_path, capsys):
    assert (
        main(["unlearn", str(ROOT / "examples" / "tiny.yaml"), "--out", str(tmp_path / "run"), "--quiet"])
        == 0
    )
    out = capsys.readouterr().out
    assert "metric" in out and "before" in out and "after" in out and "forget_nll" in out
    assert (tmp_path / "run" / "metrics.json").exists()


def test_the_progress_bar_shows_the_count_done() -> None:
    # evaluation reports whole batches (16, 32, ...) and a resumed stage starts past 0: the bar
    # must show the count done, not the number of reports
    from lethe.cli.main import _progress_bar
    from lethe.core.training.engine import Progress

    bar = _progress_bar(quiet=False)
    with bar as hooks:
        assert hooks.on_progress is not None
        for done in (16, 32, 48):
            hooks.on_progress(Progress("eval_before", done, 720, {}, None, 1.0, "example"))
        assert bar.bar.n == 48
        hooks.on_progress(Progress("unlearn", 41, 100, {"loss": 1.0}, None, 1.0))
        assert bar.bar.n == 41 and bar.bar.total == 100
