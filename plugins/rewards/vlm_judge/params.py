"""Parameters of the VLM judge reward; a light module (pydantic only)."""

from __future__ import annotations

from pydantic import Field, model_validator

from xomni_core import ComponentParams


class QwenVLNetworkParams(ComponentParams):
    """Sizes of a Qwen2.5-VL network (transformers' ``Qwen2_5_VLConfig``) for ``from_params``.

    A pretrained folder's ``config.json`` decides its own network. The defaults describe
    Qwen2.5-VL-7B-Instruct.
    """

    vocab_size: int | None = Field(None, gt=0, description="None: the size of the byte-level tokenizer.")
    hidden_size: int = Field(3584, gt=0)
    intermediate_size: int = Field(18944, gt=0)
    num_layers: int = Field(28, gt=0)
    num_heads: int = Field(28, gt=0)
    num_kv_heads: int = Field(4, gt=0)
    rope_theta: float = Field(1_000_000.0, gt=1.0, le=1e10, description="RoPE base (above 1, finite).")
    mrope_section: tuple[int, int, int] = Field(
        (16, 24, 24), description="Rotary frequencies given to the time, height and width positions."
    )
    rms_norm_eps: float = Field(1e-6, gt=0.0, le=1.0)
    max_positions: int = Field(128_000, gt=0)
    vision_depth: int = Field(32, gt=0)
    vision_hidden_size: int = Field(1280, gt=0)
    vision_intermediate_size: int = Field(3420, gt=0)
    vision_num_heads: int = Field(16, gt=0)
    vision_window_size_px: int = Field(112, gt=0, description="Side of the windows of windowed attention.")
    vision_full_attention_blocks: tuple[int, ...] = Field((7, 15, 23, 31))
    patch_size_px: int = Field(14, gt=0)
    spatial_merge_size: int = Field(2, gt=0, description="Patches merged per side into one LLM token.")
    temporal_patch_size: int = Field(2, gt=0)
    initializer_range: float = Field(
        0.02, gt=0.0, le=1.0, description="Std of the normal init used by from_params."
    )

    @model_validator(mode="after")
    def _consistent(self) -> QwenVLNetworkParams:
        problems = []
        if self.hidden_size % self.num_heads:
            problems.append(f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}")
        elif 2 * sum(self.mrope_section) != self.hidden_size // self.num_heads:
            problems.append(
                f"mrope_section={self.mrope_section} must add up to half the head size "
                f"({self.hidden_size // self.num_heads // 2})"
            )
        if self.num_heads % self.num_kv_heads:
            problems.append(
                f"num_heads={self.num_heads} must be divisible by num_kv_heads={self.num_kv_heads}"
            )
        if self.vision_hidden_size % self.vision_num_heads:
            problems.append(
                f"vision_hidden_size={self.vision_hidden_size} must be divisible by "
                f"vision_num_heads={self.vision_num_heads}"
            )
        bad_blocks = [b for b in self.vision_full_attention_blocks if not 0 <= b < self.vision_depth]
        if bad_blocks:
            problems.append(
                f"vision_full_attention_blocks {bad_blocks} are not blocks of a depth-{self.vision_depth} ViT"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class VlmJudgeParams(ComponentParams):
    """Asks a Qwen2.5-VL model whether the image matches the prompt; the score is P(yes).

    P(yes) is read at the first answer position and normalised over the yes and no answers:
    ``sum P(yes_answers) / (sum P(yes_answers) + sum P(no_answers))``. Each answer counts by the
    first token of its encoding (the whole word in Qwen's vocabulary).
    """

    network: QwenVLNetworkParams = QwenVLNetworkParams()
    question_template: str = Field(
        "Does this image match the description: {prompt}? Answer yes or no.",
        description="The user's question; {prompt} is replaced by the sample's prompt.",
    )
    system_prompt: str | None = Field("You are a helpful assistant.", description="None: no system turn.")
    yes_answers: tuple[str, ...] = Field(("Yes", "yes"), min_length=1)
    no_answers: tuple[str, ...] = Field(("No", "no"), min_length=1)
    min_pixels: int | None = Field(None, gt=0, description="None: the image processor's own minimum.")
    max_pixels: int | None = Field(None, gt=0, description="None: the image processor's own maximum.")
    batch_size: int = Field(4, ge=1, description="Samples per forward pass.")

    @model_validator(mode="after")
    def _consistent(self) -> VlmJudgeParams:
        problems = []
        try:
            filled = self.question_template.format(prompt="")
        except (KeyError, IndexError, ValueError) as exc:
            problems.append(f"question_template may only use the field {{prompt}}: {exc!r}")
        else:
            if filled == self.question_template:
                problems.append("question_template must contain {prompt}")
        if any(not answer.strip() for answer in (*self.yes_answers, *self.no_answers)):
            problems.append("yes_answers and no_answers must not contain empty strings")
        if set(self.yes_answers) & set(self.no_answers):
            problems.append(
                f"{sorted(set(self.yes_answers) & set(self.no_answers))} are both yes and no answers"
            )
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            problems.append(f"min_pixels={self.min_pixels} exceeds max_pixels={self.max_pixels}")
        if problems:
            raise ValueError("; ".join(problems))
        return self
