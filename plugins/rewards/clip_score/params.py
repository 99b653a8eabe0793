"""Parameters of the CLIP score reward; a light module (pydantic only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from xomni_core import ComponentParams

#: Rows of the byte-level tokenizer ``from_params`` builds when ``vocab_size`` is None.
BYTE_VOCAB_SIZE = 259


class ClipNetworkParams(ComponentParams):
    """Sizes of a CLIP network (names follow transformers' ``CLIPConfig``).

    ``from_params`` builds this network with random weights and a byte-level tokenizer; a
    pretrained folder's own ``config.json`` decides its network, and these fields record it.
    The defaults describe OpenAI's ViT-L/14.
    """

    vocab_size: int | None = Field(
        None, gt=0, description="Text vocabulary; None: the size of the byte-level tokenizer."
    )
    text_hidden_size: int = Field(768, gt=0)
    text_intermediate_size: int = Field(3072, gt=0)
    text_num_layers: int = Field(12, gt=0)
    text_num_heads: int = Field(12, gt=0)
    max_text_tokens: int = Field(77, ge=3, description="Text positions, start and end tokens included.")
    vision_hidden_size: int = Field(1024, gt=0)
    vision_intermediate_size: int = Field(4096, gt=0)
    vision_num_layers: int = Field(24, gt=0)
    vision_num_heads: int = Field(16, gt=0)
    image_size_px: int = Field(224, gt=0, description="Side of the square image the ViT sees.")
    patch_size_px: int = Field(14, gt=0)
    projection_dim: int = Field(768, gt=0, description="Width of the shared image-text embedding.")
    hidden_act: Literal["quick_gelu", "gelu"] = Field(
        "quick_gelu", description="MLP activation: quick_gelu for OpenAI CLIP, gelu for OpenCLIP models."
    )
    layer_norm_eps: float = Field(1e-5, gt=0.0, le=1.0)

    def count_parameters(self) -> int:
        """Weights of transformers' ``CLIPModel`` of these sizes, by formula (no torch)."""

        def layers(count: int, width: int, hidden: int) -> int:
            return count * (4 * width * width + 9 * width + 2 * width * hidden + hidden)

        h, w = self.text_hidden_size, self.vision_hidden_size
        vocab = self.vocab_size if self.vocab_size is not None else BYTE_VOCAB_SIZE
        text = (vocab + self.max_text_tokens) * h
        text += layers(self.text_num_layers, h, self.text_intermediate_size)
        patches = (self.image_size_px // self.patch_size_px) ** 2
        vision = 3 * self.patch_size_px**2 * w + (patches + 2) * w + 4 * w
        vision += layers(self.vision_num_layers, w, self.vision_intermediate_size)
        return text + 2 * h + vision + (h + w) * self.projection_dim + 1

    @model_validator(mode="after")
    def _consistent(self) -> ClipNetworkParams:
        problems = [
            f"{tower}_hidden_size={hidden} must be divisible by {tower}_num_heads={heads}"
            for tower, hidden, heads in (
                ("text", self.text_hidden_size, self.text_num_heads),
                ("vision", self.vision_hidden_size, self.vision_num_heads),
            )
            if hidden % heads
        ]
        if self.image_size_px % self.patch_size_px:
            problems.append(
                f"image_size_px={self.image_size_px} must be a multiple of patch_size_px={self.patch_size_px}"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class ClipScoreParams(ComponentParams):
    """CLIPScore: ``scale * max(cos, 0)`` of the image and prompt embeddings.

    ``scale=2.5`` with ``clamp_negative`` is the CLIPScore of Hessel et al. (2021); ``scale=1``
    without it is the plain cosine similarity.
    """

    network: ClipNetworkParams = ClipNetworkParams()
    scale: float = Field(2.5, gt=0.0, le=1e6, description="Factor w applied to the cosine similarity.")
    clamp_negative: bool = Field(True, description="Clip negative cosine similarities to 0 before scaling.")
    batch_size: int = Field(16, ge=1, description="Images embedded per forward pass.")

    def memory_estimate(self, dtype_bytes: int = 4) -> int:
        """Bytes of the CLIP network's weights at ``dtype_bytes`` per value."""
        return self.network.count_parameters() * dtype_bytes
