"""The job spec: one pydantic model shared by the CLI and the HTTP API.

`load_spec` parses YAML or JSON and validates everything that can be checked without loading a
model: types, ranges, unknown keys, the method's parameters, and which data each term needs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Union

import yaml
from pydantic import Field, ValidationError, model_validator

from lethe.core.methods import METHODS, terms_for
from lethe.core.spec.evaluation import EvalSpec
from lethe.core.spec.fields import (
    DatasetRef,
    FinetuneStage,
    LoraSpec,
    ModelSpec,
    PromptFormat,
    StrictModel,
    UnlearnCommon,
    derive,
)
from lethe.core.spec.options import Criterion, ProbesSpec, SelectSpec, SweepSpec, check_objective
from lethe.core.spec.refs import dataset_refs, with_refs

if TYPE_CHECKING:  # statically, what every method's stage shares
    UnlearnStage = UnlearnCommon
else:  # at run time, the discriminated union of every registered method's stage
    _stages = tuple(m.stage for m in METHODS.values())
    UnlearnStage = Annotated[Union[_stages], Field(discriminator="method")]  # noqa: UP007 (a tuple, not X | Y)


class SpecError(ValueError):
    """A spec that cannot be run; the message names the field and what to fix."""


class JobSpec(StrictModel):
    """Everything one unlearning job needs: model, optional fine-tuning, unlearning, evaluation."""

    name: str = Field("job", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    model: ModelSpec
    lora: LoraSpec | None = Field(default_factory=LoraSpec, description="null: full fine-tuning")
    format: PromptFormat = Field(default_factory=PromptFormat)
    finetune: FinetuneStage | None = None
    unlearn: UnlearnStage
    eval: EvalSpec = Field(default_factory=EvalSpec)
    criterion: Criterion = Field(
        default_factory=Criterion, description="what the best checkpoint or sweep run is (select, sweep)"
    )
    select: SelectSpec | None = Field(
        None, description="evaluate during unlearning, keep the best checkpoint"
    )
    probes: ProbesSpec | None = Field(None, description="robustness probes after unlearning")
    sweep: SweepSpec | None = Field(None, description="a grid for `lethe sweep`")

    @model_validator(mode="after")
    def _retain_terms_have_data(self) -> JobSpec:
        needs_normal = [t.name for t in terms_for(self.unlearn) if t.rows in ("random", "normal")]
        if needs_normal and self.unlearn.normal is None:
            raise ValueError(
                f"unlearn.normal is required: method {self.unlearn.method!r} has terms "
                f"{needs_normal} that use normal data (or set their weights to 0)"
            )
        for kind in ("forget", "normal"):  # prompts alone have no answers to train on
            ref = getattr(self.unlearn, kind)
            if (
                ref is not None
                and ref.schema_ == "prompts"
                and getattr(self.unlearn, f"{kind}_answers_from") != "model"
            ):
                raise ValueError(
                    f"unlearn.{kind} has schema 'prompts' (no answers): set "
                    f"unlearn.{kind}_answers_from: model, or give prompt/response pairs"
                )
        return self

    @model_validator(mode="after")
    def _devices_share_each_step(self) -> JobSpec:
        # each data-parallel rank takes an equal share of every step (lethe.core.training.distributed)
        world = self.model.devices
        stages = {"unlearn": self.unlearn.train}
        if self.finetune is not None:
            stages["finetune"] = self.finetune.train
        for name, train in stages.items():
            if train.batch_size % world and train.grad_accum % world:
                raise ValueError(
                    f"model.devices {world} must divide {name}.train.batch_size ({train.batch_size}) "
                    f"or {name}.train.grad_accum ({train.grad_accum}): each device takes an equal "
                    "share of every step"
                )
        return self

    @model_validator(mode="after")
    def _quantized_base_has_an_adapter(self) -> JobSpec:
        # 4/8-bit weights cannot take optimizer updates, and the quantize probe would round the
        # packed weights of an already-quantized base again: both are refused before any load
        if self.model.quantize is not None and self.lora is None:
            raise ValueError(
                f"model.quantize {self.model.quantize!r} needs LoRA (lora: null asks for full fine-tuning, "
                "which cannot update 4/8-bit weights): give lora settings, or set model.quantize to null"
            )
        if self.model.quantize is not None and self.probes is not None and self.probes.quantize is not None:
            raise ValueError(
                f"probes.quantize measures rounding an unquantized base, and model.quantize is "
                f"{self.model.quantize!r}: set probes.quantize to null"
            )
        return self

    @model_validator(mode="after")
    def _privacy_people(self) -> JobSpec:
        """eval.privacy's forgotten and retained people default to those of unlearn.erase."""
        privacy, erase = self.eval.privacy, self.unlearn.erase
        for kind in ("forget", "retain"):
            if privacy is None or getattr(privacy, kind) is not None:
                continue
            if erase is None:
                raise ValueError(
                    f"eval.privacy.{kind} is required (or name the subjects to erase with unlearn.erase, "
                    "whose dataset then gives the forgotten and retained people)"
                )
            fields = erase.forget_fields() if kind == "forget" else erase.retain_fields(limited=False)
            derive(privacy, kind, DatasetRef.model_validate(fields))
        return self

    @model_validator(mode="after")
    def _retrain_needs_a_finetune(self) -> JobSpec:
        privacy = self.eval.privacy
        if privacy is not None and privacy.reference == "retrain" and self.finetune is None:
            raise ValueError(
                "eval.privacy.reference: retrain fine-tunes a second model without the forgotten "
                "people, so it needs a finetune stage that taught them; use reference: holdout"
            )
        return self

    @model_validator(mode="after")
    def _objective_is_measured(self) -> JobSpec:
        if self.select is not None or self.sweep is not None:
            check_objective(self.criterion, self.eval)
        return self

    def datasets(self) -> list[DatasetRef]:
        """Every dataset reference in the spec (for resolving and hashing)."""
        return [ref for _, ref in dataset_refs(self)]


def format_validation_error(err: ValidationError) -> str:
    """One line per problem: `field.path: message`."""
    lines = []
    for item in err.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(spec)"
        lines.append(f"{path}: {item['msg']}")
    return "; ".join(lines)


def parse_spec(data: Any) -> JobSpec:
    """Validate a mapping as a JobSpec, raising SpecError with field paths on failure."""
    if not isinstance(data, dict):
        raise SpecError("a spec must be a mapping of fields (model, unlearn, ...)")
    try:
        return JobSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err)) from None


def load_spec(path: str | Path) -> JobSpec:
    """Read a YAML/JSON spec; relative dataset paths are taken from the spec file's folder."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {path}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise SpecError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    return absolutise_sources(parse_spec(data), path.resolve().parent)


_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:")


def absolutise_sources(spec: JobSpec, base_dir: Path) -> JobSpec:
    """A copy of `spec` whose relative file sources are absolute paths, so it runs from anywhere."""

    def absolute(_: str, ref: DatasetRef) -> DatasetRef:
        if _SCHEME.match(ref.source) or Path(ref.source).is_absolute():
            return ref
        return ref.model_copy(update={"source": str((base_dir / ref.source).resolve())})

    return with_refs(spec, absolute)


def dump_spec(spec: JobSpec) -> str:
    """The resolved spec as YAML (defaults filled in), as written to a run folder."""
    return yaml.safe_dump(spec.model_dump(mode="json", by_alias=True), sort_keys=False)
