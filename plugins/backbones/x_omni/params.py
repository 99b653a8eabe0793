"""Parameters of the X-Omni unified backbone; a light module (pydantic only, no torch).

The defaults describe the released 7B model: Qwen2.5-7B-Instruct sizes plus X-Omni's
multimodal embedding table, vision-specific layers and head (config type ``x-omni``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from xomni_core import ComponentParams

#: Longest context a config may ask for (2**20 tokens); generation loops never run longer.
MAX_POSITIONS = 1 << 20
#: Largest RoPE base accepted; far beyond any released model's, short of float overflow.
MAX_ROPE_THETA = 1e10


class XOmniParams(ComponentParams):
    """Qwen2 decoder sizes, the multimodal vocabulary and the special-token strings."""

    # --- Qwen2 decoder (names as in a Qwen2 / x-omni config.json) ---
    hidden_size: int = Field(3584, gt=0, description="Width of the residual stream.")
    intermediate_size: int = Field(18944, gt=0, description="Hidden size of each SwiGLU MLP.")
    num_hidden_layers: int = Field(28, gt=0, description="All decoder layers: vision-specific ones included.")
    num_attention_heads: int = Field(28, gt=0, description="Query heads per layer.")
    num_key_value_heads: int = Field(4, gt=0, description="Key/value heads per layer (GQA).")
    max_position_embeddings: int = Field(
        32768, gt=0, le=MAX_POSITIONS, description="Longest sequence, in tokens; bounds generation loops."
    )
    rope_theta: float = Field(
        1_000_000.0, gt=1.0, le=MAX_ROPE_THETA, description="RoPE base frequency (above 1, finite)."
    )
    rms_norm_eps: float = Field(1e-6, gt=0.0, le=1.0, description="Epsilon of every RMSNorm.")
    hidden_act: Literal["silu"] = Field("silu", description="MLP activation (SwiGLU gate).")
    initializer_range: float = Field(
        0.02, gt=0.0, le=1.0, description="Std of the normal init used by from_params."
    )
    vocab_size: int = Field(
        152064,
        gt=0,
        description="Text vocabulary (rows of lm_embed_tokens and lm_head). Ids below it are "
        "text; id vocab_size + i is row i of the multimodal table.",
    )
    tie_word_embeddings: Literal[False] = Field(
        False, description="X-Omni keeps lm_head separate from the embeddings; only false."
    )

    # --- X-Omni additions ---
    num_mm_adap_layers: int = Field(
        4, ge=0, description="First decoder layers that update only multimodal positions."
    )
    num_mm_head_layers: int = Field(
        4, ge=0, description="Last decoder layers that update only multimodal positions."
    )
    mm_vocab_size: int = Field(
        16448,
        gt=0,
        description="Rows of mm_embed_tokens and mm_head: image tokens, then the multimodal "
        "special tokens, then unused rows.",
    )
    image_vocab_size: int = Field(
        16384, gt=0, description="Image tokens: the first rows of the multimodal table."
    )
    mm_special_tokens: tuple[str, str, str] = Field(
        ("<SOM>", "<EOM>", "<IMAGE>"),
        description="Start-of-image, end-of-image and image-marker token strings.",
    )
    image_token_template: str = Field(
        "<MM-Token-{index}>", description="How image token k is written in the text tokenizer."
    )
    eos_token: str = Field("<|im_end|>", description="Token that ends a generated answer.")
    pad_token: str = Field("<|endoftext|>", description="Token used for padding.")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def total_vocab_size(self) -> int:
        """Size of the single id space: text ids then multimodal ids."""
        return self.vocab_size + self.mm_vocab_size

    def memory_estimate(self, dtype_bytes: int = 4) -> int:
        """Bytes of the weights at ``dtype_bytes`` per value, by formula (no torch)."""
        return count_parameters(self) * dtype_bytes

    def image_token(self, index: int) -> str:
        """The text-tokenizer string of image token ``index``."""
        return self.image_token_template.format(index=index)

    @model_validator(mode="after")
    def _consistent(self) -> XOmniParams:
        problems = []
        if self.hidden_size % self.num_attention_heads:
            problems.append(
                f"hidden_size={self.hidden_size} must be divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        elif self.head_dim % 2:
            problems.append(f"hidden_size / num_attention_heads = {self.head_dim} must be even for RoPE")
        if self.num_attention_heads % self.num_key_value_heads:
            problems.append(
                f"num_attention_heads={self.num_attention_heads} must be divisible by "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        if self.num_mm_adap_layers + self.num_mm_head_layers > self.num_hidden_layers:
            problems.append(
                f"num_mm_adap_layers + num_mm_head_layers = "
                f"{self.num_mm_adap_layers + self.num_mm_head_layers} exceeds "
                f"num_hidden_layers={self.num_hidden_layers}"
            )
        needed = self.image_vocab_size + len(self.mm_special_tokens)
        if self.mm_vocab_size < needed:
            problems.append(
                f"mm_vocab_size={self.mm_vocab_size} must hold image_vocab_size="
                f"{self.image_vocab_size} image tokens plus the "
                f"{len(self.mm_special_tokens)} mm_special_tokens (at least {needed})"
            )
        if len(set(self.mm_special_tokens)) != len(self.mm_special_tokens):
            problems.append(f"mm_special_tokens={self.mm_special_tokens} must be distinct")
        if "{index}" not in self.image_token_template:
            problems.append(f"image_token_template={self.image_token_template!r} must contain '{{index}}'")
        if self.eos_token == self.pad_token:
            problems.append(f"eos_token and pad_token must differ, both are {self.eos_token!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def count_parameters(params: XOmniParams) -> int:
    """Number of weights of the backbone that ``params`` describes, by formula.

    Per decoder layer: q/k/v projections with bias, o projection without, a three-matrix
    SwiGLU MLP and two RMSNorms. Outside the layers: two embedding tables, two final norms,
    two heads.
    """
    h, kv = params.hidden_size, params.num_key_value_heads * params.head_dim
    attention = (h * h + h) + 2 * (h * kv + kv) + h * h
    mlp = 3 * h * params.intermediate_size
    layer = attention + mlp + 2 * h
    vocab_rows = params.vocab_size + params.mm_vocab_size
    return params.num_hidden_layers * layer + 2 * vocab_rows * h + 2 * h
