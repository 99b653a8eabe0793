"""Base class of every component's parameter model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ComponentParams(BaseModel):
    """A component's constructor parameters: validated, frozen, unknown keys refused.

    Subclasses live in light modules (pydantic only) so configs validate without torch.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())
