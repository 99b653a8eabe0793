"""Opening image files that users give: one place that refuses what is not a readable image.

:func:`open_image` checks that the path is a regular file (a directory or a FIFO is named as
such, and a FIFO is never opened), reads only the header to cap the pixel count before any
decoding, and turns every PIL failure (unknown format, truncated data, decompression bombs)
into an :class:`~xomni_core.errors.InputError` that names the file. :func:`decode_image_bytes`
applies the same checks to an image held in memory (a data set's cell).
"""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:
    from PIL.Image import Image

#: The most pixels an image file may hold (8192 x 8192): far above any model's input, far
#: below what would exhaust memory when decoded.
MAX_PIXELS = 8192 * 8192


def check_regular_file(path: str | os.PathLike[str], what: str = "image") -> Path:
    """``path`` as a :class:`Path` when it names a regular file (after symlinks), else InputError."""
    file = Path(path)
    try:
        mode = file.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"{what} {file} does not exist") from None
    except OSError as exc:
        raise InputError(f"{what} {file} cannot be read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{what} {file} is a directory, not an image file")
    if not stat.S_ISREG(mode):
        raise InputError(f"{what} {file} is not a regular file (a FIFO, socket or device)")
    return file


def open_image(
    path: str | os.PathLike[str], *, what: str = "image", mode: str = "RGB", max_pixels: int = MAX_PIXELS
) -> Image:
    """The image in ``path``, fully decoded and converted to ``mode``; the file is closed.

    ``what`` names the source in errors (a flag such as ``--image``, or ``image``).
    """
    file = check_regular_file(path, what)
    if file.stat().st_size == 0:
        raise InputError(f"{what} {file} is empty (0 bytes)")
    return _decode(file, f"{what} {file}", mode=mode, max_pixels=max_pixels)


def decode_image_bytes(
    data: bytes, *, what: str = "image", mode: str = "RGB", max_pixels: int = MAX_PIXELS
) -> Image:
    """The image encoded in ``data`` (a file's contents), under the same checks as :func:`open_image`;
    ``what`` names it in errors."""
    if not data:
        raise InputError(f"{what} is empty (0 bytes)")
    return _decode(io.BytesIO(data), what, mode=mode, max_pixels=max_pixels)


def _decode(source: Path | io.BytesIO, label: str, *, mode: str, max_pixels: int) -> Image:
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(source) as opened:
                width, height = opened.size
                if width * height > max_pixels:
                    raise InputError(
                        f"{label} is {width} x {height} px ({width * height} pixels); "
                        f"the limit is {max_pixels} pixels"
                    )
                opened.load()
                return opened.convert(mode)
    except InputError:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        raise InputError(
            f"{label} declares more pixels than allowed (the limit is {max_pixels}): {exc}"
        ) from exc
    except UnidentifiedImageError as exc:
        raise InputError(f"{label} is not an image file PIL can read") from exc
    except MemoryError:
        raise InputError(f"{label} is too large to decode") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
        raise InputError(f"{label} is damaged or truncated: {exc}") from exc
