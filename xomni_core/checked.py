"""Base model of configs and parameters: numbers must be numbers, finite and 64-bit.

Pydantic by default takes ``true`` for an integer, ``inf`` and ``nan`` for a float and integers
of any size. A config value like that is always a mistake (or an attack) and only fails later,
deep in a run. :class:`CheckedModel` rewrites its own core schema once, when the class is
built: every integer and float field in it (also inside lists, dicts and unions) refuses
booleans, every float must be finite and every integer must fit in 64 bits. Subclasses (every
plugin's :class:`~xomni_core.params.ComponentParams` among them) inherit it without doing
anything; a nested model is checked when it derives from :class:`CheckedModel` too (pydantic
reuses a plain nested model's own validator).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

#: Core-schema keys that hold no validation schema to rewrite.
_SKIPPED_KEYS = frozenset({"metadata", "serialization", "ref", "cls", "function", "config"})


def _refuse_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("bool_is_not_number", "Input should be a number, not a boolean")
    return value


def _within_int64(value: int) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise PydanticCustomError(
            "int_too_large", "Input should fit in 64 bits (a number from -2**63 to 2**63 - 1)"
        )
    return value


_OURS = (_refuse_bool, _within_int64)


def _checked(node: Any) -> Any:
    """A copy of a core schema (or part of one) with every number node guarded."""
    if isinstance(node, (list, tuple)):
        return type(node)(_checked(item) for item in node)
    if not isinstance(node, dict):
        return node
    kind = node.get("type")
    if kind in ("function-before", "function-after") and node.get("function", {}).get("function") in _OURS:
        return node  # already guarded, by a nested checked model
    if kind == "int":
        guarded = core_schema.no_info_after_validator_function(_within_int64, node)
        return core_schema.no_info_before_validator_function(_refuse_bool, guarded)
    if kind == "float":
        return core_schema.no_info_before_validator_function(_refuse_bool, {**node, "allow_inf_nan": False})
    if kind == "literal" and any(type(v) is int for v in node.get("expected", ())):
        return core_schema.no_info_before_validator_function(_refuse_bool, node)
    return {key: value if key in _SKIPPED_KEYS else _checked(value) for key, value in node.items()}


class CheckedModel(BaseModel):
    """A pydantic model whose numbers refuse booleans, non-finite floats and huge integers."""

    model_config = ConfigDict(allow_inf_nan=False)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[BaseModel], handler: GetCoreSchemaHandler, /
    ) -> CoreSchema:
        schema: CoreSchema = _checked(handler(source))
        return schema
