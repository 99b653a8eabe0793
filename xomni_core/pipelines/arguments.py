"""Call arguments as diffusers and transformers users write them, turned into xomni's settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import ValidationError

from ..config import validation_message
from ..errors import InputError
from ..types import SamplingParams

if TYPE_CHECKING:
    import torch

OutputType = Literal["pil", "np", "pt", "latent", "tokens"]
OUTPUT_TYPES: tuple[str, ...] = get_args(OutputType)


def as_list(value: str | Sequence[str], what: str) -> list[str]:
    """A prompt argument as a list: one string is one prompt."""
    if isinstance(value, str):
        return [value]
    items = list(value)
    if not items:
        raise InputError(f"{what}: give at least one prompt")
    if not all(isinstance(item, str) for item in items):
        raise InputError(f"{what}: expected a string or a list of strings")
    return items


def sampling_from(
    base: SamplingParams, generation_config: Any = None, **keywords: float | int | None
) -> SamplingParams:
    """``base`` with the settings of a transformers ``GenerationConfig`` and then the given
    keywords (``temperature``, ``top_k``, ``top_p``, ``min_p``, ``cfg_scale``) applied.

    From a ``GenerationConfig``: ``do_sample=False`` is greedy (temperature 0), ``top_k=0`` is
    no cut, and ``guidance_scale`` is the backbone's classifier-free guidance.
    """
    changes: dict[str, Any] = {}
    if generation_config is not None:
        changes.update(_from_generation_config(generation_config))
    changes.update({key: value for key, value in keywords.items() if value is not None})
    if not changes:
        return base
    try:
        return SamplingParams.model_validate({**base.model_dump(), **changes})
    except ValidationError as exc:
        raise InputError(validation_message(exc, SamplingParams)) from exc


def _from_generation_config(config: Any) -> dict[str, Any]:
    if not hasattr(config, "do_sample"):
        raise InputError(
            f"generation_config: expected a transformers GenerationConfig, got {type(config).__name__}"
        )
    if not config.do_sample:
        changes: dict[str, Any] = {"temperature": 0.0}
    else:
        changes = {"temperature": float(config.temperature if config.temperature is not None else 1.0)}
        changes["top_k"] = int(config.top_k) if config.top_k else None
        changes["top_p"] = float(config.top_p if config.top_p is not None else 1.0)
        changes["min_p"] = float(config.min_p or 0.0)
    guidance = getattr(config, "guidance_scale", None)
    if guidance is not None:
        changes["cfg_scale"] = max(1.0, float(guidance))
    return changes


def generator_seeds(generator: torch.Generator | Sequence[torch.Generator], count: int) -> list[int]:
    """One seed per image from ``generator``: a list gives image ``i`` the initial seed of
    ``generator[i]``; one generator gives images its initial seed, plus 1, plus 2, ...

    Only the initial seed counts (``torch.Generator().manual_seed(s)`` is ``seeds=[s]``), so the
    same generators give the same images, alone or in a batch, and the command line's ``--seed s``
    gives what ``generator=torch.Generator().manual_seed(s)`` gives.
    """
    if isinstance(generator, Sequence):
        generators = list(generator)
        if len(generators) != count:
            raise InputError(
                f"generator: {len(generators)} generators given for {count} images; give one per image"
            )
        return [_initial_seed(g) for g in generators]
    first = _initial_seed(generator)
    return [first + i for i in range(count)]


def _initial_seed(generator: Any) -> int:
    if not hasattr(generator, "initial_seed"):
        raise InputError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
    seed = int(generator.initial_seed())
    return seed % 2**63  # torch seeds are 64-bit unsigned; ours are non-negative 63-bit


def images_as(images: list[Any], output_type: str) -> Any:
    """PIL images as ``output_type``: the list itself (``pil``), a float array ``(N, H, W, 3)``
    in [0, 1] (``np``) or a float tensor ``(N, 3, H, W)`` in [0, 1] (``pt``)."""
    if output_type == "pil":
        return images
    import numpy as np

    array = np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0 for image in images])
    if output_type == "np":
        return array
    import torch

    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def check_output_type(output_type: str) -> None:
    if output_type not in OUTPUT_TYPES:
        raise InputError(f"output_type: expected one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
