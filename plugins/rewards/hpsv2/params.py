"""Parameters of the HPS v2 reward; a light module (pydantic only)."""

from __future__ import annotations

from pydantic import Field

from xomni_plugins.rewards.clip_score.params import ClipNetworkParams, ClipScoreParams

#: OpenCLIP ViT-H-14, the network HPS v2 and v2.1 fine-tune.
VIT_H_14 = ClipNetworkParams(
    vocab_size=49408,
    text_hidden_size=1024,
    text_intermediate_size=4096,
    text_num_layers=24,
    text_num_heads=16,
    max_text_tokens=77,
    vision_hidden_size=1280,
    vision_intermediate_size=5120,
    vision_num_layers=32,
    vision_num_heads=16,
    image_size_px=224,
    patch_size_px=14,
    projection_dim=1024,
    hidden_act="gelu",
)


class HPSv2Params(ClipScoreParams):
    """HPS v2 scores an image by the plain cosine similarity of its embedding with the prompt's
    (the diagonal of ``image_features @ text_features.T`` with L2-normalised features); ``scale``
    multiplies it (100 gives the percentages some reports quote)."""

    network: ClipNetworkParams = VIT_H_14
    scale: float = Field(1.0, gt=0.0, le=1e6, description="Factor applied to the cosine similarity.")
    clamp_negative: bool = Field(False, description="Clip negative cosine similarities to 0 before scaling.")
