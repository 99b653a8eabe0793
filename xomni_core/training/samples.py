"""Images drawn during evaluation: what the model being trained makes of held-out captions.

Each evaluation's images go to ``OUTPUT/samples/step-NNNNNNNN/`` (``00.png``, ``01.png``, ...
and ``captions.json`` with their captions and image tokens), written atomically, and to
TensorBoard under ``OUTPUT/tensorboard/samples`` with ``report_to: [tensorboard]``. Sample
``i`` is always drawn with the same seed, so the images of one step are the same after a resume
and differ across steps by the weights alone. Drawing them never moves the run's random
streams: the global generators are saved before and restored after (:func:`preserved_rng`), so
evaluating does not change training.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..atomic import atomic_directory
from ..config import PipelineConfig
from ..errors import ConfigError

if TYPE_CHECKING:
    from PIL.Image import Image

    from ..interfaces import Decoder

SAMPLES_DIR = "samples"
#: Index offset of the decoder seeds of evaluation samples from their token seeds.
DECODER_OFFSET = 2**24
#: Where TensorBoard finds the sample images: a run of its own beside the metrics'.
BOARD_RUN = "samples"


def sample_seed(seed: int, index: int = 0) -> int:
    """The seed of evaluation sample ``index`` of a run seeded ``seed``; apart from the training
    streams (see ``grpo.stream_seed``), which use offsets below ``2 * 2**31``."""
    return (seed * 0x9E3779B1 + 3 * 2**31 + index) % 2**32


@contextlib.contextmanager
def preserved_rng(device: str) -> Iterator[None]:
    """Leave Python's, NumPy's and torch's global generators (CPU and the run's GPU) as they
    were, whatever the block draws from them."""
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    devices: list[int] = []
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index
        devices = [torch.cuda.current_device() if index is None else index]
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def build_decoder(config: PipelineConfig, *, where: str) -> Decoder[Any]:
    """The config's decoder, built alone (no rewards), for drawing samples."""
    check_can_draw(1, config, where=where)
    from ..interfaces import Decoder
    from ..pipelines.build import build_component, prepare

    resolved, registry = prepare(config.model_copy(update={"rewards": ()}), slots=("decoder",))
    decoder = build_component(resolved.component("decoder"), resolved.config, registry)
    assert isinstance(decoder, Decoder)
    for value in vars(decoder).values():
        if isinstance(value, torch.nn.Module):
            value.requires_grad_(False)
    return decoder


def check_can_draw(samples: int, config: PipelineConfig, *, where: str) -> None:
    """Refuse before training sample images that the config cannot draw."""
    if samples and config.decoder is None:
        raise ConfigError(f"{where}.samples: drawing sample images needs the config's decoder section")


class SampleWriter:
    """Writes each evaluation's images; a resumed run's TensorBoard images restart at its step."""

    def __init__(self, output_dir: Path, *, tensorboard: bool, first_step: int) -> None:
        self.folder = output_dir / SAMPLES_DIR
        self._board: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            from .metrics import TENSORBOARD_DIR

            self._board = SummaryWriter(str(output_dir / TENSORBOARD_DIR / BOARD_RUN), purge_step=first_step)

    def write(
        self, step: int, images: Sequence[Image], captions: Sequence[str], tokens: Sequence[list[int]]
    ) -> Path:
        """Save one evaluation's images with their captions and image tokens (row-major)."""
        target = self.folder / f"step-{step:08d}"
        with atomic_directory(target) as tmp:
            entries = []
            for index, (image, caption, ids) in enumerate(zip(images, captions, tokens, strict=True)):
                image.save(tmp / f"{index:02d}.png", format="PNG")
                entries.append({"file": f"{index:02d}.png", "caption": caption, "tokens": ids})
            record = {"step": step, "images": entries}
            (tmp / "captions.json").write_text(json.dumps(record) + "\n")
        if self._board is not None:
            for index, image in enumerate(images):
                pixels = np.asarray(image.convert("RGB"))
                self._board.add_image(f"sample/{index:02d}", pixels, global_step=step, dataformats="HWC")
            self._board.flush()
        return target

    def close(self) -> None:
        if self._board is not None:
            self._board.close()
