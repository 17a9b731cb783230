"""Typed building blocks of a job spec (pydantic). Unknown keys are errors everywhere.

The same models are accepted by the CLI (`lethe unlearn SPEC.yaml`) and by the HTTP API
(`POST /v1/jobs`), so a spec is validated identically before any model loads.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_TEMPLATE = "### Question: {prompt}\n### Answer: {response}"

DatasetSchema = Literal["pairs", "prompts", "pku_saferlhf", "truthfulqa", "book"]
DatasetFormat = Literal["auto", "jsonl", "csv", "parquet", "text", "hub"]


class StrictModel(BaseModel):
    """Base for every config: unknown keys are rejected, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


class BookOptions(StrictModel):
    """How a plain text (a book) is cut into prefix/continuation pairs (the copyright case)."""

    prefix_chars: int = Field(200, ge=8, le=20_000, description="characters of the prompt (prefix)")
    continuation_chars: int = Field(200, ge=8, le=20_000, description="characters of the continuation")
    stride_chars: int | None = Field(
        None, ge=1, description="step between pairs; default prefix+continuation"
    )
    start_at_sentence: bool = Field(True, description="start each prefix at a sentence beginning")


class DatasetRef(StrictModel):
    """Where a dataset comes from and how its rows become prompt/response examples.

    `source` is a local path (relative paths are taken from the spec file's folder), `hf:ORG/NAME`
    for a model-hub dataset, `builtin:NAME` for a file shipped with Lethe, or (service only)
    `dataset:ID` / `s3://bucket/key`, which the service resolves to a local file first.
    """

    source: str = Field(min_length=1)
    format: DatasetFormat = "auto"
    schema_: DatasetSchema = Field("pairs", alias="schema")
    columns: dict[str, str] = Field(default_factory=dict, description="canonical name -> column name")
    split: str | None = Field(None, description="hub split (default 'train')")
    revision: str | None = Field(None, description="hub dataset revision (pin it for reproducibility)")
    offset: int = Field(0, ge=0, description="skip this many examples")
    limit: int | None = Field(None, ge=1, description="keep at most this many examples")
    book: BookOptions = Field(default_factory=BookOptions)

    @field_validator("source")
    @classmethod
    def _no_control_characters(cls, value: str) -> str:
        if any(ord(ch) < 32 for ch in value):
            raise ValueError("source must not contain control characters")
        return value


class ModelSpec(StrictModel):
    """A causal LM by reference: a built-in name, a model-hub id (`org/name`) or a local folder."""

    name: str = Field(min_length=1, examples=["smollm2-135m-instruct", "tiny-llama", "facebook/opt-1.3b"])
    revision: str | None = None
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: Literal["cpu", "cuda", "auto"] = "auto"
    trust_remote_code: bool = False


class LoraSpec(StrictModel):
    """LoRA adapter settings (peft). `target_modules: null` picks a default for the architecture."""

    rank: int = Field(8, ge=1, le=1024)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None,
        description="module names; all-linear: every linear layer but the output head (attention and "
        "MLP: room to move the residual stream); null: the architecture's attention projections",
    )


class TrainConfig(StrictModel):
    """The optimisation loop: AdamW, linear schedule with warm-up, accumulation, clipping."""

    lr: float = Field(1e-4, gt=0, le=1.0, description="peak learning rate")
    steps: int | None = Field(None, ge=1, description="optimizer steps (default: derived from epochs)")
    epochs: float | None = Field(None, gt=0, description="passes over the main dataset, if steps is unset")
    batch_size: int = Field(2, ge=1, le=4096, description="examples of each kind per micro-batch")
    grad_accum: int = Field(1, ge=1, le=1024)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip the global gradient norm; null: off")
    stop_forget_nll: float | None = Field(
        None, gt=0, description="stop early once the forget-answer NLL reaches this value"
    )
    checkpoint_every: int = Field(0, ge=0, description="write a resumable checkpoint every N steps; 0: off")
    cache_reference: bool = Field(
        False,
        description="compute the original model's outputs on every row the run will use once, "
        "before the first step, so no step runs a reference forward",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="recompute each decoder layer's activations in backward instead of keeping them: "
        "less memory for long sequences, about one more forward per step",
    )
    log_every: int = Field(1, ge=1)
    sam_rho: float = Field(
        0.0,
        ge=0,
        le=10.0,
        description="sharpness-aware unlearning (Fan et al. 2025): the forget terms' gradient is taken "
        "at the weights moved by rho along their own gradient (norm rho); 0: off",
    )

    @model_validator(mode="after")
    def _has_length(self) -> TrainConfig:
        if self.steps is None and self.epochs is None:
            raise ValueError("set train.steps or train.epochs")
        return self


class GenerationConfig(StrictModel):
    """Decoding settings for evaluation and for generating forget answers."""

    max_new_tokens: int = Field(48, ge=1, le=4096)
    do_sample: bool = False
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    batch_size: int = Field(8, ge=1, le=1024)


def check_template(value: str) -> str:
    """A template string holds `{prompt}`, then ends with `{response}`."""
    prompt_at, response_at = value.find("{prompt}"), value.find("{response}")
    if prompt_at < 0 or response_at < 0:
        raise ValueError("template must contain {prompt} and {response}")
    if response_at < prompt_at or not value.endswith("{response}"):
        raise ValueError("template must end with {response}, after {prompt}")
    return value


class ChatTemplate(StrictModel):
    """The tokenizer's own chat template (`apply_chat_template`), the way the model is served:
    `{chat: default}` with the template's default system prompt (if it has one), `{chat: system,
    system: "..."}` with a system prompt of one's own."""

    chat: Literal["default", "system"] = "default"
    system: str | None = Field(None, description="the system message of `chat: system`")

    @model_validator(mode="after")
    def _system_only_with_system(self) -> ChatTemplate:
        if (self.chat == "system") != (self.system is not None):
            raise ValueError("set `system` exactly when chat is 'system'")
        return self


# A template string, or the tokenizer's chat template; chat templates become strings once the
# tokenizer is loaded (`lethe.core.data.tokens.render_template`).
PromptTemplate = Annotated[str, AfterValidator(check_template)] | ChatTemplate


class PromptFormat(StrictModel):
    """How an example becomes tokens: the template, the length limit, what to do past it."""

    template: PromptTemplate = Field(
        DEFAULT_TEMPLATE, description="a string with {prompt} then {response}, or {chat: default|system}"
    )
    train_templates: list[PromptTemplate] = Field(
        default_factory=list,
        description="further ways of writing prompts: each training row is written in `template` or one "
        "of these, drawn per row (seeded), so what is learned or forgotten holds across formats",
    )
    max_length: int = Field(256, ge=8, le=131_072, description="tokens per example, prompt + answer")
    overlength: Literal["truncate", "reject"] = Field(
        "truncate", description="truncate: cut the answer (then the prompt's start); reject: error"
    )

    @property
    def text(self) -> str:
        """The template as text (a chat template is rendered when the tokenizer is loaded)."""
        if not isinstance(self.template, str):
            raise ValueError("format.template is a chat template not yet rendered with the tokenizer")
        return self.template

    def texts(self) -> list[str]:
        """`template`, then each of `train_templates`, as text: row template k is texts()[k]."""
        rendered = [t for t in self.train_templates if isinstance(t, str)]
        if len(rendered) < len(self.train_templates):
            raise ValueError("format.train_templates holds a chat template not yet rendered")
        return [self.text, *rendered]


class FinetuneStage(StrictModel):
    """Optional LoRA alignment on the target content before unlearning (the copyright case)."""

    data: DatasetRef
    train: TrainConfig


class UnlearnCommon(StrictModel):
    """Fields every unlearning method shares; each method adds its own typed parameters."""

    if TYPE_CHECKING:  # each method's stage declares `method: Literal[...]`, the spec's discriminator
        method: str

    forget: DatasetRef
    normal: DatasetRef | None = Field(None, description="normal/retain data (needed by retain terms)")
    forget_answers_from: Literal["dataset", "model"] = Field(
        "dataset", description="'model': answer the forget prompts with the model itself first"
    )
    normal_answers_from: Literal["dataset", "model"] = Field(
        "dataset",
        description="'model': the normal answers are the original model's own, so the "
        "retain terms keep its behaviour on normal prompts (self-distillation)",
    )
    answer_generation: GenerationConfig = Field(default_factory=GenerationConfig)
    train: TrainConfig


class JudgeSpec(StrictModel):
    """How responses to harmful prompts are judged.

    `trained`: built from the job's own data (docs/methods.md, "Judges"): an answer is harmful when
    it says something (no refusal, not degenerate), is on its prompt's topic, and the prompt or
    the answer looks harmful (a small encoder fine-tuned on the job's forget answers and prompts
    against refusals and everyday ones; the paper's classifier is its answer part).
    `checkpoint`: any sequence-classification checkpoint (`path`, `harmful_label`). `refusal`:
    harmful unless the answer refuses. Each judge's accuracy on `check_set` is reported per kind.
    """

    kind: Literal["trained", "checkpoint", "refusal"] = "refusal"
    path: str | None = Field(None, description="encoder to fine-tune, or classifier checkpoint")
    harmful_label: int = Field(1, ge=0)
    epochs: int = Field(3, ge=1, le=50)
    check_set: str = Field("builtin:judge_check", description="labelled texts for the judge's accuracy")


class CopyrightEval(StrictModel):
    """Leakage: continuations of prefixes of the forgotten text and of a retained text."""

    forget_text: DatasetRef
    retain_text: DatasetRef | None = None
    max_examples: int = Field(16, ge=1)


def _sampling() -> GenerationConfig:
    return GenerationConfig(max_new_tokens=40, do_sample=True, temperature=1.0, top_p=1.0)


class PrivacyThresholds(StrictModel):
    """What the privacy evaluation must show after unlearning (pass/fail in the report and the
    certificate); null turns a check off."""

    max_forget_leak_rate: float | None = Field(
        0.0, ge=0, le=1, description="share of samples about forgotten people holding a private string"
    )
    max_forget_qa_over_holdout: float | None = Field(
        0.05, ge=0, le=1, description="forgotten people's QA accuracy at most never-seen people's + this"
    )
    max_retain_qa_drop: float | None = Field(
        0.05, ge=0, le=1, description="retained people's QA accuracy at least (1 - this) x before"
    )
    max_abs_privleak: float | None = Field(0.1, ge=0, description="|PrivLeak| (Min-K %++ AUC) at most this")
    max_normal_ppl_increase: float | None = Field(
        0.10, ge=0, description="normal perplexity at most (1 + this) x before (needs eval.normal)"
    )


class PrivacyEval(StrictModel):
    """The right-to-be-forgotten case: extraction, QA accuracy and membership inference on people.

    Each dataset is `pairs` rows with a `subject` column (the person), and `field` and `secret`
    columns (which fact the row asks for, and its value; `scripts/make_privacy_data.py` writes
    them). `holdout` holds people of the same kind the model never saw (MIA non-members)."""

    forget: DatasetRef
    retain: DatasetRef
    holdout: DatasetRef
    private_fields: list[str] = Field(
        default_factory=lambda: ["email", "phone", "address"],
        min_length=1,
        description="fields whose secrets count as leaked private strings",
    )
    samples: int = Field(4, ge=1, le=256, description="sampled answers per extraction prompt")
    generation: GenerationConfig = Field(default_factory=_sampling, description="extraction sampling")
    qa_max_new_tokens: int = Field(32, ge=1, le=512, description="greedy QA answers' length")
    max_retain_subjects: int = Field(5, ge=1, description="retained people evaluated (the first ones)")
    max_holdout_subjects: int = Field(20, ge=1, description="never-seen people evaluated")
    min_k: float = Field(0.2, gt=0, le=1, description="k of Min-K % and Min-K %++")
    thresholds: PrivacyThresholds = Field(default_factory=PrivacyThresholds)


class EvalSpec(StrictModel):
    """What is measured before and after unlearning; each part is optional."""

    harmful_prompts: DatasetRef | None = None
    benign_prompts: DatasetRef | None = None
    normal: DatasetRef | None = Field(None, description="held-out normal data for perplexity")
    multiple_choice: DatasetRef | None = Field(None, description="TruthfulQA-style rows (MC1/MC2)")
    copyright: CopyrightEval | None = None
    privacy: PrivacyEval | None = None
    judge: JudgeSpec = Field(default_factory=JudgeSpec)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    batch_size: int = Field(8, ge=1, le=1024)
    max_examples: int = Field(64, ge=1, description="cap per evaluation set")
    harmful_sets: dict[str, DatasetRef] = Field(
        default_factory=dict,
        description="further harmful-prompt sets by name, e.g. from sources the forget set does not use "
        "(cross-source): harmful_rate/NAME",
    )
    formats: dict[str, PromptTemplate] = Field(
        default_factory=dict,
        description="further formats by name in which the harmful sets and benign prompts are asked "
        "again: harmful_rate@NAME, over_refusal@NAME",
    )

    @field_validator("harmful_sets", "formats")
    @classmethod
    def _plain_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        bad = [name for name in value if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", name)]
        if bad:
            raise ValueError(f"names must be 1-40 letters, digits, '_' or '-': {bad}")
        return value
