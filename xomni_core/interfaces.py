"""The four component kinds as abstract base classes.

A component is built either from its params (random initialisation, for tests and training)
or from a local folder written by ``save_pretrained``; see :mod:`xomni_core.folders` for the
folder format. Heavy libraries are only named for type checking.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from .errors import InputError, PluginError
from .params import ComponentParams
from .types import (
    ComponentKind,
    DecodeRequest,
    GenerationMode,
    ImageGenerationRequest,
    PreprocessedImage,
    RewardBatch,
    RewardDirection,
    RewardResult,
    SemanticLatents,
    TextGenerationRequest,
    TokenGrid,
)

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image
    from typing_extensions import Self

P = TypeVar("P", bound=ComponentParams)


class Component(ABC, Generic[P]):
    """What every component offers: its params, construction and saving."""

    kind: ClassVar[ComponentKind]
    params_class: ClassVar[type[ComponentParams]]

    def __init__(self, params: P) -> None:
        self.params = params

    @classmethod
    @abstractmethod
    def from_params(cls, params: P, *, seed: int = 0) -> Self:
        """Build with freshly initialised weights, reproducibly for a given ``seed``."""

    @classmethod
    @abstractmethod
    def from_pretrained(cls, path: str | PathLike[str]) -> Self:
        """Load from a local folder written by :meth:`save_pretrained`."""

    @abstractmethod
    def save_pretrained(self, path: str | PathLike[str]) -> None:
        """Write params as JSON and weights as safetensors to ``path``, atomically."""

    @classmethod
    def from_exported(
        cls,
        path: str | PathLike[str],
        *,
        backend: str,
        device: str = "cpu",
        providers: Sequence[str] = (),
    ) -> Self:
        """Load artefacts written by ``xomni export`` to run on ``backend``.

        Only runtime classes (a plugin's ``runtimes``) implement this; ``providers`` lists
        onnxruntime execution providers (empty: chosen from ``device``).
        """
        raise PluginError(f"{cls.__name__} runs on torch only; it cannot load exported artefacts")

    def to(self, device: str | None = None, dtype: str | None = None) -> Self:
        """Move to a device and/or dtype name (``"cpu"``, ``"float32"``); no-op by default."""
        return self


class Weightless(Component[P]):
    """Save and load for a component whose whole state is its params (a programmatic reward,
    a decoder that computes its images): its folder holds ``xomni_component.json`` alone.

    List it before the kind's base class, ``class MyReward(Weightless[MyParams], Reward[MyParams])``,
    and set ``params_class``. The folder records the plugin as ``plugin_name``, which defaults to
    a reward's ``name``. :meth:`from_params` ignores ``seed`` and calls ``cls(params)``, so any
    setup belongs in ``__init__``.
    """

    plugin_name: ClassVar[str]

    @classmethod
    def recorded_plugin_name(cls) -> str:
        """The plugin name written to and expected in the folder."""
        name = getattr(cls, "plugin_name", None) or getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"{cls.__name__} must set plugin_name (the name it is registered under)")
        return name

    @classmethod
    def from_params(cls, params: P, *, seed: int = 0) -> Self:
        return cls(params)

    @classmethod
    def from_pretrained(cls, path: str | PathLike[str]) -> Self:
        from .folders import read_component_file

        params = read_component_file(
            path, kind=cls.kind, plugin=cls.recorded_plugin_name(), params_class=cls.params_class
        )
        return cls(cast(P, params))

    def save_pretrained(self, path: str | PathLike[str]) -> None:
        from .atomic import atomic_directory
        from .folders import write_component_file

        with atomic_directory(path) as folder:
            plugin = self.recorded_plugin_name()
            write_component_file(folder, kind=self.kind, plugin=plugin, params=self.params)


class Tokenizer(Component[P]):
    """Semantic image tokenizer: images to token grids, token grids to semantic latents."""

    kind: ClassVar[ComponentKind] = "tokenizer"

    @property
    @abstractmethod
    def codebook_size(self) -> int:
        """Number of distinct image tokens."""

    @property
    @abstractmethod
    def downsample_factor(self) -> int:
        """Pixels per token along each side."""

    @property
    @abstractmethod
    def latent_channels(self) -> int:
        """Channels of the semantic latents :meth:`decode` returns."""

    @abstractmethod
    def preprocess(self, image: Image) -> PreprocessedImage:
        """Resize and normalise one image; raise ``ImageRejectedError`` naming the failed rule."""

    @abstractmethod
    def encode(self, pixels: torch.Tensor) -> TokenGrid:
        """Token grid for preprocessed pixels of shape ``(batch, 3, height_px, width_px)``."""

    @abstractmethod
    def decode(self, grid: TokenGrid) -> SemanticLatents:
        """Semantic latents for a token grid."""

    def encode_images(self, images: Sequence[Image]) -> TokenGrid:
        """Preprocess and encode images that resize to the same grid."""
        import torch

        prepared = [self.preprocess(image) for image in images]
        grids = {p.grid for p in prepared}
        if len(grids) != 1:
            sizes = ", ".join(f"{g.grid_h}x{g.grid_w}" for g in sorted(grids, key=str))
            raise InputError(
                f"images in one batch must share a token grid, got grids {sizes}; encode them one at a time"
            )
        return self.encode(torch.stack([p.pixels for p in prepared]))


@dataclass(frozen=True)
class BackboneVocab:
    """A backbone's single id space: text ids first, then multimodal ids.

    Image token ``k`` has id ``image_token_offset + k``.
    """

    text_vocab_size: int
    image_vocab_size: int
    total_vocab_size: int
    image_token_offset: int
    som_id: int
    eom_id: int
    image_id: int
    eos_id: int
    pad_id: int
    max_positions: int

    def image_token_id(self, index: int) -> int:
        return self.image_token_offset + index

    def mode_range(self, mode: GenerationMode) -> range:
        """The ids ``mode`` can emit: text ids in text mode, image tokens in image mode."""
        if mode == "text":
            return range(self.text_vocab_size)
        if mode == "image":
            return range(self.image_token_offset, self.image_token_offset + self.image_vocab_size)
        raise InputError(f"generation mode must be 'text' or 'image', got {mode!r}")


@dataclass(frozen=True)
class BackboneStep:
    """Output of one forward pass: float32 logits of the last position and the cache.

    ``logits`` is ``(batch, len(vocab.mode_range(mode)))``: column ``j`` scores id
    ``mode_range(mode).start + j``, so image mode never computes or samples text ids. ``past``
    is opaque to callers: pass it back to the next :meth:`Backbone.forward_step`.
    """

    logits: torch.Tensor
    past: Any


class Backbone(Component[P]):
    """Unified autoregressive transformer over text and image tokens, with its text tokenizer.

    Implementations provide the forward pass and the text tokenizer; generation (KV cache,
    left padding, sampling, CFG) is shared and lives in :mod:`xomni_core.generation`.
    """

    kind: ClassVar[ComponentKind] = "backbone"

    @property
    @abstractmethod
    def vocab(self) -> BackboneVocab:
        """The id layout."""

    @property
    def device(self) -> torch.device:
        """Device that input tensors of :meth:`forward_step` should live on."""
        import torch

        return torch.device("cpu")

    @abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """Ids for ``text``; the multimodal special tokens are recognised in it."""

    @abstractmethod
    def detokenize(self, ids: Sequence[int]) -> str:
        """Text for ids, special tokens removed."""

    def new_cache(self, batch_size: int, max_length: int) -> Any | None:
        """An empty cache with room for ``max_length`` positions of ``batch_size`` rows, to pass
        as ``past`` to the first :meth:`forward_step` (the prompt). ``None`` (the default) lets
        :meth:`forward_step` allocate its cache as it goes."""
        return None

    def compile_decoding(self, mode: str | None = None) -> None:
        """Compile the one-token step that follows a :meth:`new_cache` cache (``torch.compile``;
        on CUDA also a CUDA graph), trading compile time at the first step for faster steps.
        ``mode`` is torch.compile's. Backbones without such a step raise :class:`PluginError`."""
        raise PluginError(f"this backbone ({type(self).__name__}) has no compiled decoding step")

    @abstractmethod
    def forward_step(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past: Any | None,
        mode: GenerationMode,
    ) -> BackboneStep:
        """Run ``input_ids (batch, seq)`` after ``past``.

        ``past`` is ``None`` or :meth:`new_cache`'s empty cache for the prompt, afterwards what
        the previous step returned. ``attention_mask`` covers past and new positions
        ``(batch, past + seq)``, 0 for padding; ``position_ids (batch, seq)`` count only real
        tokens. Returns the last position's logits over ``vocab.mode_range(mode)`` (see
        :class:`BackboneStep`). The returned cache may be ``past`` updated in place.
        """

    def chat_prompt(self, user_turn: str) -> str:
        """Wrap a user turn, which may hold image segments, in the model's chat template."""
        return user_turn

    def image_prefix(self, grid_h: int, grid_w: int) -> str:
        """Text that opens an image segment of ``grid_h x grid_w`` tokens."""
        return f"<SOM>{grid_h} {grid_w}<IMAGE>"

    def image_segment_ids(self, grid: TokenGrid, index: int = 0) -> list[int]:
        """Ids of a whole image segment for sample ``index`` of ``grid``."""
        prefix = self.tokenize(self.image_prefix(grid.grid.grid_h, grid.grid.grid_w))
        tokens = [self.vocab.image_token_id(k) for k in grid.rows()[index]]
        return [*prefix, *tokens, self.vocab.eom_id]

    def generate_image_tokens(self, request: ImageGenerationRequest) -> TokenGrid:
        """Exactly ``grid_h * grid_w`` image tokens per prompt, in row-major order."""
        from .generation import generate_image_tokens

        return generate_image_tokens(self, request)

    def generate_text(self, request: TextGenerationRequest) -> list[list[int]]:
        """Continue each prompt in text mode until end of sequence or ``max_new_tokens``."""
        from .generation import generate_text

        return generate_text(self, request)

    # --- training (optional: backbones that support it override both) ---

    def trainable_module(self) -> torch.nn.Module:
        """The module whose parameters training updates, used in place, and that
        ``DistributedDataParallel`` wraps; :meth:`save_pretrained` writes its current weights."""
        raise PluginError(
            f"this backbone ({type(self).__name__}) does not support training: it has no trainable_module()"
        )

    def sequence_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        mode: GenerationMode,
        *,
        logits_to_keep: int = 0,
        module: torch.nn.Module | None = None,
    ) -> torch.Tensor:
        """Float32 logits ``(batch, seq, total_vocab)`` of whole sequences, without a cache and
        differentiable unless called under ``torch.no_grad``.

        Inputs are as for :meth:`forward_step` with no past, and logits are restricted by
        ``mode`` the same way. ``logits_to_keep > 0`` computes only that many last positions.
        ``module`` runs in place of :meth:`trainable_module` and must be it or a wrapper of it
        (e.g. ``DistributedDataParallel``) that takes the same call.
        """
        raise PluginError(
            f"this backbone ({type(self).__name__}) does not support training: it has no sequence_logits()"
        )


class Decoder(Component[P]):
    """Renders semantic latents (and, optionally, prompts) into images."""

    kind: ClassVar[ComponentKind] = "decoder"

    @property
    @abstractmethod
    def latent_channels(self) -> int:
        """Channels of the semantic latents it accepts."""

    @property
    @abstractmethod
    def pixels_per_token(self) -> int:
        """Output pixels per latent position along each side."""

    @abstractmethod
    def decode(self, request: DecodeRequest) -> list[Image]:
        """One RGB image of ``grid * pixels_per_token`` pixels per latent grid."""


class Reward(Component[P]):
    """Scores images against their prompts; ``direction`` says whether higher is better."""

    kind: ClassVar[ComponentKind] = "reward"
    name: ClassVar[str]
    direction: ClassVar[RewardDirection] = "maximize"

    @abstractmethod
    def score(self, batch: RewardBatch) -> RewardResult:
        """One score per sample of ``batch``."""

    def as_reward_function(self) -> Callable[..., list[float]]:
        """This reward as a TRL-style ``(prompts, completions, **kwargs) -> list[float]``.

        ``completions`` are images; per-sample metadata comes from keyword lists of the same
        length (as TRL passes dataset columns).
        """

        def reward_function(
            prompts: Sequence[str], completions: Sequence[Image], **kwargs: Any
        ) -> list[float]:
            columns = {k: v for k, v in kwargs.items() if isinstance(v, list | tuple)}
            metadata = [
                {k: v[i] for k, v in columns.items() if len(v) == len(prompts)} for i in range(len(prompts))
            ]
            result = self.score(RewardBatch(list(completions), list(prompts), metadata))
            return list(result.scores)

        reward_function.__name__ = self.name
        return reward_function
