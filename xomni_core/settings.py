"""Plugin selection settings: strict mode, allow and deny lists, and conflict pins."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from pydantic import ConfigDict, Field

from .checked import CheckedModel

ALLOW_ENV = "XOMNI_PLUGINS"
DENY_ENV = "XOMNI_DISABLE_PLUGINS"


class PluginSettings(CheckedModel):
    """How installed plugins are admitted.

    Entries of ``allow`` and ``deny`` match a plugin name, ``kind/name``, an entry-point name
    or a distribution name. ``prefer`` maps ``kind/name`` (or ``name``) to the distribution
    that wins when two distributions provide it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    strict: bool = Field(False, description="fail when any installed plugin is broken")
    allow: tuple[str, ...] | None = Field(None, description="only these plugins are enabled (None: all)")
    deny: tuple[str, ...] = Field((), description="these plugins are disabled")
    prefer: dict[str, str] = Field(
        default_factory=dict, description="kind/name -> distribution that wins a name clash"
    )

    def with_environment(self, environ: Mapping[str, str] | None = None) -> PluginSettings:
        """Merge ``XOMNI_PLUGINS`` (allowlist) and ``XOMNI_DISABLE_PLUGINS`` (denylist)."""
        env = os.environ if environ is None else environ
        allow = self.allow
        env_allow = _split(env.get(ALLOW_ENV, ""))
        if env_allow:
            allow = tuple(a for a in allow if a in env_allow) if allow is not None else env_allow
        deny = tuple(dict.fromkeys((*self.deny, *_split(env.get(DENY_ENV, "")))))
        return self.model_copy(update={"allow": allow, "deny": deny})


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def positive_number_from_env(
    name: str, unit: str, error: type[Exception], environ: Mapping[str, str] | None = None
) -> float | None:
    """The positive, finite number in environment variable ``name`` (None when unset or blank);
    anything else raises ``error`` naming the variable and the ``unit`` expected."""
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise error(f"{name}={raw!r}: expected a positive number of {unit}")
    return value
