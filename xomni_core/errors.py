"""Exceptions raised by xomni.

Every error a user can cause derives from :class:`XomniError`; the CLI prints those as one
paragraph and exits with status 2.
"""

from __future__ import annotations


class XomniError(Exception):
    """Base class of all errors a user can act on."""


class ConfigError(XomniError):
    """A pipeline config is malformed or names values a plugin does not accept."""


class PluginError(XomniError):
    """A plugin is unknown, broken, duplicated, disabled or incompatible."""


class InputError(XomniError, ValueError):
    """An input to a component is invalid (an image, a grid, a prompt)."""


class ImageRejectedError(InputError):
    """An image fails a tokenizer's preprocessing filter (too small, too elongated)."""


class CheckpointError(XomniError):
    """A model folder or checkpoint is missing files or holds unexpected or mis-shaped tensors."""
