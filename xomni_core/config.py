"""Pipeline configuration: files in YAML, TOML or JSON, dotted overrides, validation.

Validation happens in two steps, neither importing torch: :func:`load_config` checks the
structure, :func:`resolve_config` finds each named plugin and validates its params against the
plugin's own model. Every error names the config path, the plugin, the value and what was
expected.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from .checked import CheckedModel
from .config_files import MAX_DEPTH, checked_data, parse_yaml, read_file_data
from .errors import ConfigError, PluginError
from .params import ComponentParams
from .quoting import quote, shorten
from .settings import PluginSettings
from .spec import PluginSpec
from .training.settings import TrainingSettings
from .types import Backend, ComponentKind, SamplingParams

if TYPE_CHECKING:
    from .registry import PluginRegistry

Dtype = Literal["float32", "float16", "bfloat16"]
SINGLE_SLOTS: tuple[ComponentKind, ...] = ("tokenizer", "backbone", "decoder")

#: Devices a pipeline can run on, in torch's syntax (``meta`` holds no data, so it cannot).
DEVICE_PATTERN = re.compile(r"(cpu|mps|(cuda|xpu)(:[0-9]{1,3})?)")
#: Most problems one validation error lists; the rest are counted.
MAX_PROBLEMS = 10
#: Most decoder steps a config or flag may ask for.
MAX_INFERENCE_STEPS = 1000


class ComponentConfig(CheckedModel):
    """One component: which plugin, its params, and optionally a folder of pretrained weights.

    Without ``weights`` the component is built from ``params`` with fresh random weights.
    A relative ``weights`` path is relative to the config file.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    plugin: str = Field(min_length=1, description="plugin name, see `xomni plugins list`")
    params: dict[str, Any] = Field(default_factory=dict, description="the plugin's parameters")
    weights: str | None = Field(
        None, description="local folder written by save_pretrained, or by `xomni export` for other backends"
    )
    adapter: str | None = Field(
        None,
        description="LoRA adapter folder (from `xomni train sft/grpo` with training.lora) merged into "
        "the weights at load; torch backend only, relative to the config file",
    )
    backend: Backend = Field("torch", description="torch, or a runtime of the exported artefacts")
    providers: tuple[str, ...] = Field(
        (), description="onnxruntime execution providers, in order (default: from runtime.device)"
    )


RewardNormalization = Literal["none", "zscore", "minmax"]


class RewardConfig(ComponentConfig):
    """A reward component, its weight in the combined reward and how its scores are scaled.

    Weights are non-negative: a reward's declared direction already decides its sign.
    ``normalize`` rescales this reward's scores over each scored batch (``zscore``: zero mean,
    unit deviation; ``minmax``: into [0, 1]) before weighting, so rewards of different scales
    mix predictably.
    """

    weight: float = Field(1.0, ge=0.0, description="factor of this reward in the weighted sum, >= 0")
    normalize: RewardNormalization = Field("none", description="per-batch rescaling before weighting")


class RuntimeSettings(CheckedModel):
    """Where and how the pipeline runs."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:N, mps, xpu or xpu:N")
    dtype: Dtype = Field("float32", description="compute dtype of the components")
    seed: int = Field(0, ge=0, lt=2**63, description="seed for random initialisation and sampling")
    threads: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads of `xomni generate` and `xomni chat` (None: torch's default); "
        "1 suits models whose ops are too small to split",
    )
    compile: bool = Field(
        False,
        description="compile the backbone's one-token decoding step with torch.compile (CUDA: as a "
        "CUDA graph); costs compile time at the first generation of each batch size",
    )

    @field_validator("device")
    @classmethod
    def _torch_device(cls, device: str) -> str:
        if not DEVICE_PATTERN.fullmatch(device):
            raise ValueError("expected a torch device: cpu, cuda, cuda:N, mps, xpu or xpu:N")
        return device


class GenerationSettings(CheckedModel):
    """Defaults of text-to-image generation; command-line options override them."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    height_px: int = Field(256, gt=0, description="image height, a multiple of the token size")
    width_px: int = Field(256, gt=0, description="image width, a multiple of the token size")
    sampling: SamplingParams = SamplingParams(temperature=1.0, min_p=0.03)
    num_inference_steps: int | None = Field(
        None, ge=1, le=MAX_INFERENCE_STEPS, description="decoder steps, at most 1000 (None: its default)"
    )
    guidance_scale: float | None = Field(None, ge=0.0, description="decoder CFG (None: its default)")
    noise_scale: float | None = Field(
        None, ge=0.0, description="decoder initial-noise scale, 0 is deterministic (None: its default)"
    )


class PipelineConfig(CheckedModel):
    """A whole pipeline: the components by slot, rewards, runtime and plugin settings."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    version: Literal[1] = 1
    tokenizer: ComponentConfig | None = None
    backbone: ComponentConfig | None = None
    decoder: ComponentConfig | None = None
    rewards: tuple[RewardConfig, ...] = ()
    runtime: RuntimeSettings = RuntimeSettings()
    generation: GenerationSettings = GenerationSettings()
    plugins: PluginSettings = PluginSettings()
    training: TrainingSettings | None = None
    _base_dir: Path | None = PrivateAttr(None)

    def with_base_dir(self, base_dir: Path | None) -> PipelineConfig:
        """A copy whose relative weight paths resolve against ``base_dir``."""
        copy = self.model_copy()
        copy._base_dir = base_dir
        return copy

    def weights_path(self, component: ComponentConfig) -> Path | None:
        """The component's weights folder, relative paths resolved against the config file."""
        if component.weights is None:
            return None
        path = Path(os.path.expanduser(component.weights))
        return path if path.is_absolute() or self._base_dir is None else self._base_dir / path


@dataclass(frozen=True)
class ResolvedComponent:
    """A config slot bound to its plugin descriptor and validated params."""

    slot: str
    spec: PluginSpec
    params: ComponentParams
    weights: Path | None
    backend: Backend = "torch"
    providers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResolvedConfig:
    """A config whose every plugin exists and whose every params block is valid."""

    config: PipelineConfig
    components: dict[str, ResolvedComponent]

    def component(self, slot: str) -> ResolvedComponent:
        if slot not in self.components:
            raise ConfigError(f"the pipeline config has no '{slot}' section, which this needs")
        return self.components[slot]


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a YAML (.yaml/.yml), TOML (.toml) or JSON (.json) file into a dict.

    Reading is bounded (size, nesting, values, numbers; see :mod:`xomni_core.config_files`) and
    an empty file is refused.
    """
    return read_file_data(Path(path))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``path.to.key=value`` overrides; values are parsed as YAML scalars or lists.

    Values are read under the same limits as config files.
    """
    for override in overrides:
        path, sep, raw = override.partition("=")
        where = f"override {quote(override)}"
        if not sep or not path.strip():
            raise ConfigError(f"{where} must look like section.key=value")
        keys = path.strip().split(".")
        if len(keys) > MAX_DEPTH:
            raise ConfigError(f"{where}: the key is nested more than {MAX_DEPTH} levels deep")
        value = checked_data(parse_yaml(raw, where), where, tuple(keys)) if raw.strip() else ""
        _set_path(data, keys, value, override)
    return data


def _set_path(data: Any, keys: list[str], value: Any, override: str) -> None:
    node = data
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        where = ".".join(keys[: depth + 1])
        if isinstance(node, list):
            if not (key.isascii() and key.isdigit() and len(key) < 10) or int(key) >= len(node):
                raise ConfigError(
                    f"override {quote(override)}: {shorten(where)} is not an index of a list of {len(node)}"
                )
            index = int(key)
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
        else:
            raise ConfigError(
                f"override {quote(override)}: {shorten('.'.join(keys[:depth]))} is not a section"
            )


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    *,
    data: dict[str, Any] | None = None,
) -> PipelineConfig:
    """Read a config file (or take ``data``), apply overrides and check its structure."""
    raw = checked_data(dict(data), "config") if data is not None else {}
    if path is not None:
        raw = read_config_file(path)
    raw = checked_data(apply_overrides(raw, overrides or []), "config with its overrides")
    base_dir = Path(path).resolve().parent if path is not None else None
    try:
        return PipelineConfig.model_validate(raw).with_base_dir(base_dir)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, prefix="", plugin=None, model=PipelineConfig)) from exc


def resolve_config(config: PipelineConfig, registry: PluginRegistry) -> ResolvedConfig:
    """Find each slot's plugin and validate its params; raises :class:`ConfigError`."""
    components: dict[str, ResolvedComponent] = {}
    slots: list[tuple[str, ComponentKind, ComponentConfig]] = [
        (kind, kind, section) for kind in SINGLE_SLOTS if (section := getattr(config, kind)) is not None
    ]
    slots += [(f"rewards.{i}", "reward", r) for i, r in enumerate(config.rewards)]
    for slot, kind, section in slots:
        try:
            spec = registry.get(kind, section.plugin)
        except PluginError as exc:
            raise ConfigError(f"{slot}.plugin: {exc}") from exc
        try:
            params = spec.params.model_validate(section.params)
        except ValidationError as exc:
            raise ConfigError(
                _describe(exc, prefix=f"{slot}.params.", plugin=spec, model=spec.params)
            ) from exc
        except Exception as exc:  # a plugin's validator failing in a way pydantic does not catch
            raise ConfigError(
                f"{slot}.params: {kind} plugin '{spec.name}' could not validate its params "
                f"{section.params!r}: {type(exc).__name__}: {exc}"
            ) from exc
        weights = config.weights_path(section)
        if section.backend not in spec.backends:
            raise ConfigError(
                f"{slot}.backend: {kind} plugin '{spec.name}' has no {section.backend} runtime "
                f"(got {section.backend!r}; expected one of {', '.join(spec.backends)})"
            )
        if section.backend != "torch" and weights is None:
            raise ConfigError(
                f"{slot}.weights: the {section.backend} backend runs exported artefacts; set weights "
                f"to a folder written by `xomni export` for {kind} plugin '{spec.name}'"
            )
        if weights is not None and not _is_dir(weights, f"{slot}.weights"):
            raise ConfigError(
                f"{slot}.weights: folder {shorten(str(weights))} does not exist ({kind} plugin '{spec.name}' "
                "loads pretrained weights from a local folder written by save_pretrained)"
            )
        components[slot] = ResolvedComponent(
            slot, spec, params, weights, backend=section.backend, providers=section.providers
        )
    return ResolvedConfig(config, components)


#: Facts of the component interfaces that must agree across slots, as
#: ``(slot, fact, other slot, other fact)``. A params model exposes a fact as an attribute named
#: like the component's property (``latent_channels``); a fact a plugin does not expose is not
#: compared.
FIT_RULES: tuple[tuple[str, str, str, str], ...] = (
    ("tokenizer", "codebook_size", "backbone", "image_vocab_size"),
    ("tokenizer", "latent_channels", "decoder", "latent_channels"),
    ("tokenizer", "downsample_factor", "decoder", "pixels_per_token"),
)


def slot_params(component: ResolvedComponent) -> ComponentParams:
    """The params a slot is built with: those saved in its weights folder's
    ``xomni_component.json`` (checked against the plugin's model), else the config's."""
    if component.weights is None or component.backend != "torch":
        return component.params
    from .errors import CheckpointError

    try:
        return saved_params(component)
    except CheckpointError as exc:
        raise ConfigError(f"{component.slot}.weights: {exc}") from exc


def saved_params(component: ResolvedComponent) -> ComponentParams:
    """The params recorded in the slot's weights folder, checked against the plugin's model;
    :class:`~xomni_core.errors.CheckpointError` when the folder's record cannot be read."""
    from .folders import read_component_file

    assert component.weights is not None
    return read_component_file(
        component.weights,
        kind=component.spec.kind,
        plugin=component.spec.name,
        params_class=component.spec.params,
    )


def check_fit(resolved: ResolvedConfig) -> list[str]:
    """Check that the slots fit together (:data:`FIT_RULES`) from params and saved JSON alone,
    without loading weights; raise :class:`ConfigError` naming every mismatch, else return the
    facts compared."""
    params = {slot: slot_params(c) for slot, c in resolved.components.items() if slot in SINGLE_SLOTS}
    problems, compared = [], []
    for slot, fact, other, other_fact in FIT_RULES:
        if slot not in params or other not in params:
            continue
        value, other_value = _fact(params[slot], fact), _fact(params[other], other_fact)
        if value is None or other_value is None:
            continue
        if value != other_value:
            problems.append(
                f"{slot} {fact} {value} (plugin '{resolved.components[slot].spec.name}') != "
                f"{other} {other_fact} {other_value} (plugin '{resolved.components[other].spec.name}')"
            )
        else:
            compared.append(f"{slot} {fact} = {other} {other_fact} = {value}")
    if problems:
        raise ConfigError("components do not fit together: " + "; ".join(problems))
    return compared


def _fact(params: ComponentParams, name: str) -> int | None:
    try:
        value = getattr(params, name, None)
    except Exception:  # a plugin's property that fails says nothing we can compare
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _is_dir(path: Path, key: str) -> bool:
    """Whether ``path`` is a folder; a path the file system refuses outright names ``key``."""
    try:
        return path.is_dir()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{key}: {quote(str(path))} cannot be a folder: {reason}") from exc


def validation_message(exc: ValidationError, model: type[BaseModel], *, prefix: str = "") -> str:
    """One readable line per problem of ``exc``: the field path, what was given and expected."""
    return _describe(exc, prefix=prefix, plugin=None, model=model)


def _describe(exc: ValidationError, *, prefix: str, plugin: PluginSpec | None, model: type[BaseModel]) -> str:
    owner = f" of {plugin.kind} plugin '{plugin.name}'" if plugin else ""
    errors = exc.errors(include_url=False)
    messages = []
    listed_keys: set[tuple[str, ...]] = set()  # sections whose known keys were already listed
    for error in errors[:MAX_PROBLEMS]:
        loc = [str(part) for part in error["loc"]]
        path = shorten(prefix + ".".join(loc))
        if error["type"] == "extra_forbidden":
            known = _field_names(model, loc[:-1])
            hint = difflib.get_close_matches(loc[-1], known, n=1)
            text = f"{path}: unknown key{owner}"
            if hint:
                text += f"; did you mean '{hint[0]}'?"
            if tuple(loc[:-1]) not in listed_keys:
                listed_keys.add(tuple(loc[:-1]))
                text += f" Known keys: {', '.join(known)}."
        elif not loc:  # a check across fields: the whole input is no help
            where = prefix.strip().rstrip(".")
            reason = shorten(error["msg"].removeprefix("Value error, "))
            text = f"{where}: {reason}{owner}" if where else reason + owner
        else:
            expected = _expected(model, loc)
            reason = shorten(error["msg"].removeprefix("Value error, "))
            text = f"{path}: {reason}{owner} (got {quote(error.get('input'))}"
            text += f"; expected {expected})" if expected else ")"
        messages.append(text)
    if len(errors) > MAX_PROBLEMS:
        messages.append(f"... and {len(errors) - MAX_PROBLEMS} more.")
    count = f"{len(errors)} problems: " if len(errors) > 1 else ""
    return "invalid config: " + count + " ".join(messages)


def _field_names(model: type[BaseModel], loc: list[str]) -> list[str]:
    target: Any = model
    for part in loc:
        if part.isdigit():  # an item of a list section
            continue
        field = getattr(target, "model_fields", {}).get(part)
        if field is None:
            return []
        target = field.annotation
        target = _model_in(target)
    return list(getattr(target, "model_fields", {}))


def _model_in(annotation: Any) -> Any:
    args = getattr(annotation, "__args__", ())
    for candidate in (annotation, *args):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return annotation


def _expected(model: type[BaseModel], loc: list[str]) -> str:
    """A short description of a field's type and constraints from the JSON schema."""
    schema = _json_schema(model)
    if schema is None:
        return ""
    defs = schema.get("$defs", {})
    node: dict[str, Any] = schema
    for part in loc:
        node = _deref(node, defs)
        if part.isdigit() and "items" in node:
            node = _deref(node["items"], defs)
            continue
        if "anyOf" in node:  # an optional section: follow the branch that has fields
            node = next((_deref(n, defs) for n in node["anyOf"] if "$ref" in n or "properties" in n), node)
        props = node.get("properties", {})
        if part not in props:
            return ""
        node = props[part]
    node = _deref(node, defs)
    return _schema_words(node, defs)


@functools.lru_cache(maxsize=64)
def _json_schema(model: type[BaseModel]) -> dict[str, Any] | None:
    """A model's JSON schema, built once: a message about many fields needs it many times."""
    try:
        return model.model_json_schema()
    except Exception:
        return None


def _deref(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref:
        return dict(defs.get(ref.rsplit("/", 1)[-1], {}))
    return node


def _schema_words(node: dict[str, Any], defs: dict[str, Any]) -> str:
    if "anyOf" in node:
        return " or ".join(_schema_words(_deref(n, defs), defs) for n in node["anyOf"])
    if "enum" in node:
        return "one of " + ", ".join(repr(v) for v in node["enum"])
    if "const" in node:
        return repr(node["const"])
    words = [str(node.get("type", "value"))]
    for key, sign in (
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
        ("minLength", "length >="),
        ("minItems", "items >="),
    ):
        if key in node:
            words.append(f"{sign} {node[key]}")
    return " ".join(words)


def config_json_schema(registry: PluginRegistry) -> dict[str, Any]:
    """JSON Schema of pipeline configs, with each plugin's params schema selected by name."""
    schema = PipelineConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "xomni pipeline config"
    defs = schema.setdefault("$defs", {})
    for kind in (*SINGLE_SLOTS, "reward"):
        branches = []
        for name in registry.names(kind):
            params_model = registry.get(kind, name).params
            prefix = f"{kind}.{name}."
            try:
                params_schema = params_model.model_json_schema(ref_template=f"#/$defs/{prefix}{{model}}")
                json.dumps(params_schema)
            except Exception as exc:  # one plugin's odd params must not cost everyone the schema
                params_schema = {
                    "type": "object",
                    "description": f"{kind} plugin '{name}' gives no JSON schema of its params "
                    f"({type(exc).__name__}: {exc}); any mapping is accepted here and "
                    "`xomni config validate` checks them",
                }
            for def_name, definition in params_schema.pop("$defs", {}).items():
                defs[prefix + def_name] = definition
            branches.append(
                {
                    "if": {"properties": {"plugin": {"const": name}}},
                    "then": {"properties": {"params": params_schema}},
                }
            )
        slot_schema: dict[str, Any] = {
            "$ref": "#/$defs/RewardConfig" if kind == "reward" else "#/$defs/ComponentConfig",
            "properties": {"plugin": {"enum": registry.names(kind)}} if registry.names(kind) else {},
        }
        if branches:
            slot_schema["allOf"] = branches
        defs[f"{kind}Slot"] = slot_schema
    for kind in SINGLE_SLOTS:
        schema["properties"][kind] = {
            "anyOf": [{"$ref": f"#/$defs/{kind}Slot"}, {"type": "null"}],
            "default": None,
        }
    schema["properties"]["rewards"] = {
        "type": "array",
        "items": {"$ref": "#/$defs/rewardSlot"},
        "default": [],
    }
    return schema
