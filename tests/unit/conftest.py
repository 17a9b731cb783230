"""Fixtures shared by the unit tests of training and methods."""

import pytest
from toy_data import FMT, FORGET, NORMAL

from lethe.core.methods import finetune_terms
from lethe.core.models.loading import load_model
from lethe.core.spec.fields import ModelSpec, TrainConfig
from lethe.core.training.engine import Stage, StageData, run_stage


@pytest.fixture(scope="module")
def knowing_base():
    """A tiny model fully fine-tuned on both sets: it knows something to forget and to keep."""
    model, tok = load_model(ModelSpec(name="tiny-llama", device="cpu"))
    model.requires_grad_(True)
    stage = Stage(
        "finetune",
        finetune_terms(),
        StageData(forget=FORGET + NORMAL),
        TrainConfig(lr=3e-3, steps=60, batch_size=8),
        FMT,
        seed=0,
    )
    run_stage(model, tok, stage)
    return model, tok
