"""Typed building blocks of a job spec (pydantic). Unknown keys are errors everywhere.

The same models are accepted by the CLI (`lethe unlearn SPEC.yaml`) and by the HTTP API
(`POST /v1/jobs`), so a spec is validated identically before any model loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from lethe.core.spec.subjects import DatasetFormat, DatasetSchema, EraseSpec, SubjectRows, printable_source

DEFAULT_TEMPLATE = "### Question: {prompt}\n### Answer: {response}"
# the default of a field a validator builds when it is not given (None until then; typed Any so
# the field keeps its type: code after validation never sees None)
BUILT: Any = None


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
    subjects: SubjectRows | None = Field(
        None, description="keep only the rows of some subjects, or of all but some (read before offset/limit)"
    )

    @field_validator("source")
    @classmethod
    def _printable(cls, value: str) -> str:
        return printable_source(value)


class ModelSpec(StrictModel):
    """A causal LM by reference: a built-in name, a model-hub id (`org/name`) or a local folder."""

    name: str = Field(min_length=1, examples=["smollm2-135m-instruct", "tiny-llama", "facebook/opt-1.3b"])
    revision: str | None = None
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: Literal["cpu", "cuda", "auto"] = "auto"
    devices: int = Field(
        1,
        ge=1,
        le=64,
        description="processes of data-parallel training within the job (one per device; gloo on CPU, "
        "nccl on GPUs); evaluation runs on rank 0",
    )
    quantize: Literal["nf4", "int8"] | None = Field(
        None,
        description="base weights in 4-bit NF4 (QLoRA: double quantization, computing in model.dtype) "
        "or 8-bit (LLM.int8), with bitsandbytes on a CUDA GPU; needs LoRA and model.dtype bf16 or fp16",
    )
    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _quantized_on_a_gpu(self) -> ModelSpec:
        # bitsandbytes' 4/8-bit kernels run on CUDA only, and compute in a 16-bit dtype: fp32
        # compute would give back most of the memory the quantized base saves
        if self.quantize is not None and self.device == "cpu":
            raise ValueError(
                f"model.quantize {self.quantize!r} needs a CUDA GPU (bitsandbytes): set model.device "
                "to cuda or auto, or model.quantize to null"
            )
        if self.quantize is not None and self.dtype == "fp32":
            raise ValueError(
                f"model.quantize {self.quantize!r} computes in model.dtype: set model.dtype to bf16 or fp16"
            )
        return self


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
    cache_reference: bool | Literal["auto"] = Field(
        "auto",
        description="compute the original model's outputs on every row the run will use once, "
        "before the first step, so no step runs a reference forward; auto: when the terms need only "
        "answer log-probs (small) and the run visits more rows than it has distinct ones",
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

    # typed as always set: after validation it is (given, or built from `erase`)
    forget: DatasetRef = Field(
        BUILT, description="the data to forget; required unless `erase` names subjects instead"
    )
    erase: EraseSpec | None = Field(
        None,
        exclude=True,  # stored and dumped as the forget/normal references it expands to
        description="an erasure request: forget the named subjects' rows of one dataset and keep "
        "everyone else's as normal data (instead of `forget`)",
    )
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

    @model_validator(mode="after")
    def _forget_or_erase(self) -> UnlearnCommon:
        if self.erase is None:
            if self.forget is None:
                raise ValueError(
                    "unlearn.forget is required (or name the subjects to erase with unlearn.erase)"
                )
            return self
        # a forget set already built from `erase` (validation runs again on every assignment)
        # carries the same selection; any other forget set contradicts the request
        if self.forget is not None and self.forget.subjects != self.erase.forget_rows():
            raise ValueError(
                "unlearn.erase and unlearn.forget are mutually exclusive: erase builds the forget "
                "set from the subjects it names; leave out unlearn.forget"
            )
        if self.forget is None:
            derive(self, "forget", DatasetRef.model_validate(self.erase.forget_fields()))
        if self.normal is None:  # a normal set given with the request is used as given
            derive(self, "normal", DatasetRef.model_validate(self.erase.retain_fields(limited=True)))
        return self


def derive(model: BaseModel, name: str, value: Any) -> None:
    """Set a field a validator builds from others, bypassing assignment validation (which would
    run the validator again), and mark it set so that `exclude_unset` dumps keep it."""
    model.__dict__[name] = value
    model.__pydantic_fields_set__.add(name)
