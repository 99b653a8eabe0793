"""Base class of every component's parameter model."""

from __future__ import annotations

from pydantic import ConfigDict

from .checked import CheckedModel


class ComponentParams(CheckedModel):
    """A component's constructor parameters: validated, frozen, unknown keys refused.

    Subclasses live in light modules (pydantic only) so configs validate without torch. Like
    every config model, numbers refuse booleans, floats must be finite and integers fit 64 bits
    (see :mod:`xomni_core.checked`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), allow_inf_nan=False)
