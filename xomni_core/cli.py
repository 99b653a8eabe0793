"""The ``xomni`` command line.

Listing plugins and validating configs never import torch; ``generate`` and ``chat`` import
the pipelines only when they run. Errors a user can fix print one paragraph and exit 2;
``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import serve_args
from ._version import CORE_API_VERSION, __version__
from .errors import XomniError
from .heap import skip_collection_at_exit
from .quoting import printable, shorten

if TYPE_CHECKING:
    from .convert import ConverterSpec

EXIT_USAGE = 2
#: Longest error message printed, in characters; the rest is counted, not shown.
MAX_MESSAGE = 1500


def run() -> NoReturn:
    """The ``xomni`` console script: :func:`main`, then exit without the collector's last walk
    over the libraries a command loaded (see :mod:`xomni_core.heap`)."""
    code = main()
    skip_collection_at_exit()
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``xomni`` command and return its exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        with _allowing_large(args.allow_large):
            code: int = args.handler(args)
        return code
    except XomniError as exc:
        if args.debug:
            raise
        _fail(str(exc))
    except OSError as exc:
        if args.debug:
            raise
        _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
    except KeyboardInterrupt:
        print("xomni: interrupted", file=sys.stderr)
        return 130
    return EXIT_USAGE


@contextlib.contextmanager
def _allowing_large(allow: bool) -> Iterator[None]:
    """Skip the memory check of pipeline building while a command runs, when asked to."""
    if not allow:
        yield
        return
    from .resources import ALLOW_LARGE_ENV  # not on the startup path of every command

    before = os.environ.get(ALLOW_LARGE_ENV)
    os.environ[ALLOW_LARGE_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ALLOW_LARGE_ENV, None)
        else:
            os.environ[ALLOW_LARGE_ENV] = before


def _fail(message: str) -> None:
    """Print one error paragraph: control characters escaped, at most :data:`MAX_MESSAGE` long."""
    text = shorten(printable(message), MAX_MESSAGE)
    print(
        textwrap.fill(f"xomni: error: {text}", width=100, break_long_words=False, break_on_hyphens=False),
        file=sys.stderr,
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xomni",
        description="Swappable X-Omni components: plugins, configs, generation.",
    )
    parser.add_argument(
        "--version", action="version", version=f"xomni {__version__} (core API {CORE_API_VERSION})"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument(
        "--allow-large",
        action="store_true",
        help="build components even when their estimated weights exceed the memory available "
        "(the same as XOMNI_ALLOW_LARGE=1)",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    plugins = commands.add_parser("plugins", help="list and inspect installed plugins")
    plugin_commands = plugins.add_subparsers(title="plugin commands", metavar="COMMAND")
    listing = plugin_commands.add_parser("list", help="every installed plugin with its status")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument("--strict", action="store_true", help="exit 2 if any plugin has a problem")
    listing.set_defaults(handler=_plugins_list)
    check = plugin_commands.add_parser(
        "check",
        help="import every plugin's implementation and runtimes; exit 2 if any fails",
        description="Listing imports descriptors only; this imports each usable plugin's "
        "implementation class and each declared runtime class (torch and more with them) and "
        "reports what fails.",
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(handler=_plugins_check)
    show = plugin_commands.add_parser("show", help="a plugin's params, origin and hooks")
    show.add_argument("name", help="plugin name or kind/name")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(handler=_plugins_show)

    config = commands.add_parser("config", help="validate configs and print their schema")
    config_commands = config.add_subparsers(title="config commands", metavar="COMMAND")
    validate = config_commands.add_parser("validate", help="check a pipeline config file")
    validate.add_argument("file", help="YAML, TOML or JSON pipeline config, or a pipeline folder")
    _add_overrides(validate)
    validate.add_argument("--strict", action="store_true", help="fail if any plugin is broken")
    validate.set_defaults(handler=_config_validate)
    schema = config_commands.add_parser("schema", help="JSON Schema of pipeline configs")
    schema.add_argument("--out", help="write to this file instead of standard output")
    schema.set_defaults(handler=_config_schema)

    models = commands.add_parser(
        "models", help="pipelines shipped with xomni: where they are, what they scored, intact or not"
    )
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(handler=_models)

    generate = commands.add_parser("generate", help="text to image")
    generate.add_argument("prompts", nargs="+", metavar="PROMPT", help="one image per prompt")
    generate.add_argument(
        "--config",
        help="pipeline config file or pipeline folder (default: the shipped xomni-nano model, 128 x 128 px "
        "scenes)",
    )
    _add_overrides(generate)
    generate.add_argument(
        "--out",
        default="outputs",
        help="folder for PNGs and generation.json (default: outputs). Earlier images are never "
        "replaced: a run writes image-NNN.png under the next free numbers, generation.json "
        "describes the latest run, and the record it replaces is kept as generation-NNN.json, "
        "NNN being the number of that run's first image",
    )
    generate.add_argument("--height", type=int, help="image height in px (multiple of 16)")
    generate.add_argument("--width", type=int, help="image width in px (multiple of 16)")
    generate.add_argument("--seed", type=int, help="seed (default: runtime.seed)")
    generate.add_argument("--steps", type=int, help="decoder inference steps")
    generate.add_argument("--guidance", type=float, help="decoder guidance scale")
    generate.add_argument("--noise-scale", type=float, help="decoder initial-noise scale (0: deterministic)")
    generate.add_argument("--temperature", type=float, help="0 for greedy")
    generate.add_argument("--top-k", type=int)
    generate.add_argument("--top-p", type=float)
    generate.add_argument("--min-p", type=float)
    generate.add_argument("--cfg-scale", type=float, help="backbone classifier-free guidance")
    generate.add_argument(
        "--negative-prompt",
        help="what guidance steers away from, for every prompt (backbone with --cfg-scale > 1, decoder "
        "with --guidance > 1; default: the empty prompt)",
    )
    generate.add_argument("--no-progress", action="store_true", help="hide progress bars")
    generate.set_defaults(handler=_generate)

    chat = commands.add_parser(
        "chat",
        help="answer questions about an image",
        description="Answer QUESTION about --image, printing the answer as it is generated. Each "
        "further question (repeat --then) is asked in the same conversation, after the earlier "
        "answers. A model whose folder says it was not trained for understanding (the shipped "
        "xomni-nano) is refused with a message instead of answering noise.",
    )
    chat.add_argument("question")
    chat.add_argument("--image", required=True, help="image file")
    chat.add_argument(
        "--config", help="pipeline config file or pipeline folder (default: the shipped xomni-nano model)"
    )
    _add_overrides(chat)
    chat.add_argument(
        "--then", action="append", default=[], metavar="QUESTION", help="a follow-up question (repeatable)"
    )
    chat.add_argument(
        "--max-new-tokens",
        type=int,
        help="most tokens per answer (default: 256, fewer when the context holds less)",
    )
    chat.add_argument("--seed", type=int, help="seed of sampling (default: runtime.seed)")
    chat.add_argument("--temperature", type=float, help="0 (the default) for greedy")
    chat.add_argument("--top-k", type=int)
    chat.add_argument("--top-p", type=float)
    chat.add_argument("--min-p", type=float)
    chat.add_argument("--no-progress", action="store_true", help="hide progress bars")
    chat.set_defaults(handler=_chat)

    convert = commands.add_parser(
        "convert",
        help="turn a published checkpoint into xomni component folders",
        usage="%(prog)s [-h] [--list] NAME SRC DST [OPTIONS]",
        description="Convert SRC, a checkpoint in the layout converter NAME reads, into component "
        "folders and a pipeline config under DST, written atomically. Converters come from installed "
        "distributions (the xomni.converters entry points): --list shows them, "
        "'xomni convert NAME --help' the options of one.",
    )
    convert.add_argument("--list", action="store_true", help="list the installed converters and exit")
    convert.add_argument("format", nargs="?", metavar="NAME", help="converter (the layout of SRC)")
    convert.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    convert.set_defaults(handler=_convert)

    export = commands.add_parser(
        "export",
        help="export components to ONNX, TensorRT engines or a Triton model repository",
        description="Export a config's components, check them against PyTorch on unseen shapes "
        "(--validate), and write OUT/pipeline.<backend>.yaml that runs the exported artefacts.",
    )
    export.add_argument(
        "config", nargs="?", help="pipeline config file (default: the shipped xomni-nano model)"
    )
    _add_overrides(export)
    export.add_argument(
        "--component",
        choices=("tokenizer", "backbone", "decoder", "all"),
        default="all",
        help="which component to export (default: all)",
    )
    export.add_argument("--format", choices=("onnx", "tensorrt", "triton"), default="onnx")
    export.add_argument(
        "--out",
        required=True,
        help="output folder; OUT/<component> per component. A new OUT appears whole or not at all; "
        "in an existing OUT each replaced folder is swapped in whole",
    )
    export.add_argument(
        "--dtype",
        choices=("float32", "float16", "bfloat16"),
        default="float32",
        help="precision inside the graphs",
    )
    export.add_argument(
        "--validate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the parity gate against PyTorch (default: on)",
    )
    export.add_argument(
        "--triton-backend",
        choices=("onnxruntime", "tensorrt"),
        default="onnxruntime",
        help="what the Triton models run (with --format triton)",
    )
    export.add_argument(
        "--force",
        action="store_true",
        help="replace OUT/<component> (and OUT/triton) even when they hold files no export wrote",
    )
    export.add_argument("--no-progress", action="store_true", help="hide progress bars")
    export.set_defaults(handler=_export)
    serve_args.add_serving_flags(export)
    serve_args.add_repository_parser(commands)
    serve_args.add_serve_parser(commands, _add_overrides)

    train = commands.add_parser("train", help="fine-tune the backbone")
    train_commands = train.add_subparsers(title="training commands", metavar="COMMAND")
    grpo = train_commands.add_parser(
        "grpo",
        help="reinforcement learning with GRPO against the config's rewards",
        description="Train the backbone with GRPO as the config's training.grpo section says. "
        "Run it under torchrun for several processes (NCCL on CUDA, gloo on CPU).",
    )
    grpo.add_argument("config", help="pipeline config file with rewards and a training.grpo section")
    _add_overrides(grpo)
    grpo.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in training.grpo.output_dir",
    )
    grpo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    grpo.set_defaults(handler=_train_grpo)
    sft = train_commands.add_parser(
        "sft",
        help="supervised fine-tuning on image-caption pairs",
        description="Fine-tune the backbone on image-caption pairs as the config's training.sft section "
        "says: cross-entropy on the image tokens of each caption's image. Run it under torchrun for "
        "several processes (NCCL on CUDA, gloo on CPU).",
    )
    sft.add_argument("config", help="pipeline config file with a training.sft section")
    _add_overrides(sft)
    sft.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in training.sft.output_dir",
    )
    sft.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sft.set_defaults(handler=_train_sft)
    merge = train_commands.add_parser(
        "merge-lora",
        help="fold a LoRA adapter into a full backbone folder",
        description="Build the config's backbone (backbone.weights, or params and runtime.seed), add the "
        "LoRA adapter of backbone.adapter (or --adapter) and write the merged backbone, a plain "
        "save_pretrained folder that backbone.weights takes without the adapter.",
    )
    merge.add_argument(
        "config", help="pipeline config (or pipeline folder) whose backbone the adapter was trained on"
    )
    _add_overrides(merge)
    merge.add_argument("--adapter", help="adapter folder (default: the config's backbone.adapter)")
    merge.add_argument("--out", required=True, help="folder to write the merged backbone to")
    merge.set_defaults(handler=_train_merge_lora)
    estimate = train_commands.add_parser(
        "estimate",
        help="print the memory a training run needs per device, without weights",
        description="Estimate per device the weights, gradients, AdamW state and one micro-batch's "
        "activations of `xomni train sft` (or grpo) on the config, for its training settings (full or "
        "LoRA, mixed precision, gradient checkpointing). The backbone is built on the meta device: "
        "no weights are read or allocated, so it works for any size.",
    )
    estimate.add_argument("config", help="pipeline config file with a training section")
    _add_overrides(estimate)
    estimate.add_argument(
        "--section",
        choices=("sft", "grpo"),
        help="which training to estimate (default: the config's; sft if both)",
    )
    estimate.add_argument(
        "--world-size", type=int, default=1, help="processes (GPUs) of the run (default: 1)"
    )
    estimate.add_argument(
        "--fsdp",
        action="store_true",
        help="shard weights, gradients and optimiser state over --world-size processes (FSDP full "
        "sharding, ZeRO-3) instead of replicating them (DDP)",
    )
    estimate.set_defaults(handler=_train_estimate)
    nano = train_commands.add_parser(
        "nano",
        help="train the xomni-nano pipeline from scratch on synthetic scenes",
        description="Run every stage of the xomni-nano recipe on the CPU, seeded: tokenizer (IBQ), "
        "decoder (VAE, then flow matching), backbone SFT, GRPO with the compositional judge as "
        "reward, and the held-out comparison of SFT, best-of-N and GRPO. OUT/model is the trained "
        "pipeline with its provenance.",
    )
    nano.add_argument("--out", required=True, help="output folder; OUT/model is the trained pipeline")
    nano.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="STAGE.FIELD=VALUE",
        help="change a recipe setting, e.g. grpo.steps=200 (repeatable)",
    )
    nano.add_argument("--resume", action="store_true", help="skip the stages a run in OUT finished")
    nano.add_argument(
        "--until",
        choices=("tokenizer", "decoder", "sft", "grpo", "eval"),
        help="stop after this stage, without writing OUT/model (resume later, with other settings "
        "for the stages not yet started if need be)",
    )
    nano.add_argument("--no-progress", action="store_true", help="hide progress bars")
    nano.set_defaults(handler=_train_nano)

    bench = commands.add_parser("bench", help="benchmarks")
    bench_commands = bench.add_subparsers(title="benchmarks", metavar="COMMAND")
    compose = bench_commands.add_parser(
        "compose",
        help="compositional benchmark: objects, counts, colours, positions, words",
        description="Judge images against synthetic scene specs (shapes, colours, counts, relations, "
        "rendered words) and print the accuracy per category. Pick one source of images: "
        "--ground-truth (the renderer's own, to check the judge), --config (drawn here by a pipeline) "
        "or --images (a folder written by 'xomni generate'; its prompts are read as captions, or "
        "looked up in --specs, a --write-prompts file). --write-prompts only writes the split's prompts.",
    )
    source = compose.add_mutually_exclusive_group()
    source.add_argument("--ground-truth", action="store_true", help="score the renderer's own images")
    source.add_argument("--config", help="pipeline config: generate the split's prompts and score them")
    source.add_argument("--images", metavar="DIR", help="folder with generation.json from 'xomni generate'")
    source.add_argument(
        "--write-prompts", metavar="FILE", help="write one {prompt, scene} JSON object a line and stop"
    )
    compose.add_argument(
        "--specs",
        metavar="FILE",
        help="prompt file (from --write-prompts) for --images; without it, prompts are parsed as captions",
    )
    compose.add_argument("--split", default="eval", help="train, rl or eval (default: eval)")
    compose.add_argument("--n", type=int, default=140, help="number of prompts, shared across categories")
    compose.add_argument("--seed", type=int, default=0, help="seed of the prompts and of generation")
    compose.add_argument("--categories", help="comma-separated subset of categories (default: all)")
    compose.add_argument("--height", type=int, default=128, help="image height in px")
    compose.add_argument("--width", type=int, default=128, help="image width in px")
    compose.add_argument("--batch-size", type=int, default=8, help="prompts per pipeline call (--config)")
    _add_overrides(compose)
    compose.add_argument("--out", metavar="FILE", help="write the report as JSON")
    compose.add_argument("--no-progress", action="store_true", help="hide progress bars")
    compose.set_defaults(handler=_bench_compose)
    grammar = bench_commands.add_parser(
        "grammar",
        help="the caption grammar of the synthetic scenes: templates, colours, shapes, counts, words",
        description="List the vocabulary the compositional benchmark draws its prompts from and reads "
        "them back with (--images without --specs): one template per category and the words of each slot.",
    )
    grammar.add_argument("--json", action="store_true", help="machine-readable output")
    grammar.set_defaults(handler=_bench_grammar)
    return parser


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a config value, e.g. decoder.params.num_inference_steps=20",
    )


def _plugins_list(args: argparse.Namespace) -> int:
    from .registry import PluginRegistry, missing_implementation

    registry = PluginRegistry.discover()
    rows = []
    unfound = 0  # admitted by discovery, but the implementation module does not exist
    for r in sorted(registry.records, key=lambda r: (r.kind or "~", r.name)):
        status, error = r.status, r.error
        missing = missing_implementation(r.spec) if r.usable and r.spec is not None else None
        if missing is not None:
            status, error, unfound = "broken", missing, unfound + 1
        rows.append(
            {
                "kind": r.kind or "?",
                "name": r.name,
                "version": r.version or "?",
                "distribution": r.distribution,
                "status": status,
                "error": error,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, ("kind", "name", "version", "distribution", "status"))
        for row in rows:
            if row["error"] and row["status"] != "ok":
                print(f"  {row['kind']}/{row['name']}: {row['error']}")
    problems = len(registry.problems()) + unfound
    if args.strict and problems:
        _fail(f"{problems} plugin(s) have problems (strict mode)")
        return EXIT_USAGE
    return 0


def _plugins_check(args: argparse.Namespace) -> int:
    from .registry import PluginRegistry, check_implementations

    registry = PluginRegistry.discover()
    checks = check_implementations(registry)
    rows = [
        {
            "kind": c.record.kind,
            "name": c.record.name,
            "backend": c.backend,
            "implementation": c.target,
            "distribution": c.record.distribution,
            "status": "ok" if c.ok else "fails",
            "error": c.error,
        }
        for c in checks
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, ("kind", "name", "backend", "implementation", "status"))
        for row in rows:
            if row["error"]:
                print(f"  {row['kind']}/{row['name']} ({row['backend']}): {row['error']}")
    failures = [row for row in rows if row["status"] != "ok"]
    if failures:
        _fail(f"{len(failures)} implementation(s) fail to import")
        return EXIT_USAGE
    return 0


def _print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    widths = {c: max([len(c), *(len(str(r[c])) for r in rows)]) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip())


def _plugins_show(args: argparse.Namespace) -> int:
    from .registry import PluginRegistry

    registry = PluginRegistry.discover()
    records = registry.find(args.name)
    if not records:
        import difflib

        names = sorted({r.name for r in registry.records} | {r.qualified_name for r in registry.records})
        close = difflib.get_close_matches(args.name, names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise XomniError(f"no plugin named '{args.name}'.{hint} Installed: {', '.join(names)}.")
    described = [_describe_record(r) for r in records]
    if args.json:
        print(json.dumps(described, indent=2, default=str))
        return 0
    for info in described:
        print(f"{info['kind']}/{info['name']} {info['version']}  [{info['status']}]")
        if info.get("description"):
            print(f"  {info['description']}")
        print(f"  distribution:   {info['distribution']}")
        print(f"  entry point:    {info['entry_point']}")
        if info.get("implementation"):
            print(f"  implementation: {info['implementation']}")
            print(f"  core API:       {info['api_version']}")
            print(f"  backends:       {', '.join(info['backends'])}")
        print(f"  hooks:          {', '.join(info['hooks']) or 'none'}")
        if info.get("error"):
            print(f"  error:          {info['error']}")
        if info.get("params"):
            print("  params:")
            for p in info["params"]:
                default = "required" if p["required"] else f"default {json.dumps(p['default'])}"
                print(
                    f"    {p['name']}: {p['type']} ({default})"
                    + (f"  {p['description']}" if p["description"] else "")
                )
    return 0


def _describe_record(record: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "kind": record.kind or "?",
        "name": record.name,
        "version": record.version or "?",
        "status": record.status,
        "distribution": record.distribution,
        "entry_point": record.entry_point,
        "hooks": list(record.hooks),
        "error": record.error,
    }
    spec = record.spec
    if spec is not None:
        info.update(
            implementation=spec.implementation,
            api_version=spec.api_version,
            backends=list(spec.backends),
            description=spec.description,
            params=_params_table(spec.params),
        )
    return info


def _params_table(model: Any) -> list[dict[str, Any]]:
    from pydantic_core import PydanticUndefined

    table = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        type_name = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
        default = None if field.default is PydanticUndefined else field.default
        if field.default_factory is not None:
            try:  # plugin code: it may need the other fields, or simply fail
                default = field.get_default(call_default_factory=True, validated_data={})
            except Exception as exc:
                default = f"<computed: {type(exc).__name__}: {exc}>"
        try:
            shown = _jsonable(default)
        except Exception:  # a plugin's model whose own dump fails
            shown = repr(default)
        table.append(
            {
                "name": name,
                "type": type_name or str(annotation).replace("typing.", ""),
                "required": field.is_required(),
                "default": shown,
                "description": field.description or "",
            }
        )
    return table


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    try:
        json.dumps(value)
        return value
    except TypeError:
        return repr(value)


def _config_validate(args: argparse.Namespace) -> int:
    from .config import check_fit, load_config, resolve_config
    from .registry import PluginRegistry

    if Path(args.file).is_dir():
        from .pipelines.folder import folder_config

        config = folder_config(args.file, args.overrides)
    else:
        config = load_config(args.file, args.overrides)
    settings = config.plugins.model_copy(update={"strict": True}) if args.strict else config.plugins
    resolved = resolve_config(config, PluginRegistry.discover(settings))
    for slot, component in resolved.components.items():
        source = component.weights or "random init from params"
        print(
            f"{slot}: {component.spec.kind} plugin '{component.spec.name}' "
            f"{component.spec.version} ({source})"
        )
    for fact in check_fit(resolved):
        print(f"fits: {fact}")
    print(f"{args.file}: valid")
    return 0


def _config_schema(args: argparse.Namespace) -> int:
    from .config import config_json_schema
    from .registry import PluginRegistry

    text = json.dumps(config_json_schema(PluginRegistry.discover()), indent=2) + "\n"
    if args.out:
        from .atomic import atomic_file

        with atomic_file(args.out) as tmp:
            tmp.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _models(args: argparse.Namespace) -> int:
    from .models import SHIPPED_MODELS, provenance, shipped_model_dir, verify_model_folder

    rows = []
    for name in SHIPPED_MODELS:
        folder = shipped_model_dir(name)
        record = provenance(name)
        try:
            verify_model_folder(folder)
            files = "intact"
        except XomniError as exc:
            files = f"CHANGED: {exc}"
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        rows.append(
            {
                "name": name,
                "config": str(folder / "pipeline.yaml"),
                "size_mb": round(size / 2**20, 1),
                "weights_sha256": record["weights_sha256"],
                "files": files,
                "command": record["command"],
                "benchmark_overall": record["benchmark"]["overall"],
            }
        )
    all_intact = all(row["files"] == "intact" for row in rows)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0 if all_intact else EXIT_USAGE
    for row in rows:
        scores = ", ".join(f"{mode} {100 * acc:.1f}%" for mode, acc in row["benchmark_overall"].items())
        print(f"{row['name']} (default)" if row["name"] == SHIPPED_MODELS[0] else row["name"])
        print(f"  config:  {row['config']}")
        print(f"  size:    {row['size_mb']} MB, sha256 {row['weights_sha256'][:16]}..., files {row['files']}")
        print(f"  made by: {row['command']}")
        print(f"  compose benchmark (eval split): {scores}")
    return 0 if all_intact else EXIT_USAGE


def _generate(args: argparse.Namespace) -> int:
    from .config import load_config
    from .generate_command import run_generate
    from .models import default_pipeline_config

    if args.config and Path(args.config).is_dir():
        from .pipelines.folder import folder_config

        config = folder_config(args.config, args.overrides)
    else:
        config = load_config(args.config or default_pipeline_config(), args.overrides)
    return run_generate(config, args)


def _chat(args: argparse.Namespace) -> int:
    from .generate_command import run_chat

    return run_chat(args)


def _train_grpo(args: argparse.Namespace) -> int:
    from .config import load_config
    from .training.grpo import train_grpo

    config = load_config(args.config, args.overrides)
    result = train_grpo(config, resume=args.resume, show_progress=not args.no_progress)
    _report_training(result, metric="reward_mean", label="reward")
    return 0


def _train_sft(args: argparse.Namespace) -> int:
    from .config import load_config
    from .training.sft import train_sft

    config = load_config(args.config, args.overrides)
    result = train_sft(config, resume=args.resume, show_progress=not args.no_progress)
    _report_training(result, metric="loss", label="loss")
    return 0


def _train_merge_lora(args: argparse.Namespace) -> int:
    from .config import load_config
    from .errors import ConfigError
    from .pipelines.build import build_component, prepare

    if Path(args.config).is_dir():
        from .pipelines.folder import folder_config

        config = folder_config(args.config, args.overrides)
    else:
        config = load_config(args.config, args.overrides)
    if config.backbone is None:
        raise ConfigError("the pipeline config has no backbone section, which `train merge-lora` needs")
    if args.adapter is not None:
        adapter = str(Path(args.adapter).resolve())
        config = config.model_copy(
            update={"backbone": config.backbone.model_copy(update={"adapter": adapter})}
        )
    if config.backbone is None or config.backbone.adapter is None:
        raise ConfigError("backbone.adapter: give the adapter folder (or pass --adapter)")
    resolved, registry = prepare(config, slots=("backbone",))
    backbone = build_component(resolved.component("backbone"), resolved.config, registry)
    backbone.save_pretrained(args.out)
    print(f"merged backbone: {args.out} (use it as backbone.weights, without backbone.adapter)")
    return 0


def _train_estimate(args: argparse.Namespace) -> int:
    from .config import load_config
    from .errors import ConfigError
    from .training.estimate import GIB, device_memory, estimate_training_memory

    config = load_config(args.config, args.overrides)
    if args.world_size < 1:
        raise ConfigError(f"--world-size must be at least 1, got {args.world_size}")
    section = args.section
    if section is None:
        training = config.training
        section = "grpo" if training is not None and training.sft is None and training.grpo else "sft"
    estimate = estimate_training_memory(config, section=section, world_size=args.world_size, fsdp=args.fsdp)
    print(estimate.table())
    available = device_memory(config.runtime.device)
    if available is not None:
        verdict = "fits" if estimate.total <= available else "does NOT fit"
        print(f"{verdict} in this machine's {config.runtime.device} ({available / GIB:.1f} GiB)")
    return 0


def _train_nano(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from .config import apply_overrides, validation_message
    from .errors import ConfigError, PluginError

    try:
        from xomni_plugins.recipes.nano import NanoRecipe, run_nano_recipe, train_nano_stages
    except ImportError as exc:
        raise PluginError(f"`train nano` needs the reference plugins (xomni_plugins): {exc}") from exc
    try:
        recipe = NanoRecipe.model_validate(apply_overrides({}, args.overrides))
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, NanoRecipe, prefix="--set ")) from exc
    if args.until is not None:
        seconds = train_nano_stages(
            args.out, recipe, until=args.until, resume=args.resume, show_progress=not args.no_progress
        )
        print(f"stages done: {', '.join(seconds)} ({sum(seconds.values()) / 60:.1f} min in all)")
        print(f"continue with: xomni train nano --out {args.out} --resume")
        return 0
    result = run_nano_recipe(
        args.out, recipe, resume=args.resume, show_progress=not args.no_progress, command=sys.argv
    )
    print(result.report.table(), end="")
    total = sum(result.seconds.values())
    print(f"trained pipeline: {result.model_dir} (stages took {total / 60:.1f} min)")
    config = result.model_dir / "pipeline.yaml"
    print(f'try it: xomni generate "two red circles left of a blue square" --config {config}')
    return 0


def _report_training(result: Any, *, metric: str, label: str) -> None:
    """The last step's headline metric and where the metrics, plot and weights are."""
    if not result.is_main_process:
        return
    last = result.records[-1] if result.records else None
    summary = f"; {label} {last[metric]:.4f} at step {last['step']}" if last else ""
    print(f"trained to step {result.step}{summary}")
    print(f"metrics: {result.metrics_path}" + (f", plot: {result.plot_path}" if result.plot_path else ""))
    if result.checkpoint is not None and (result.checkpoint / "adapter").is_dir():
        print(
            f"LoRA adapter: {result.checkpoint / 'adapter'} (use it as backbone.adapter on the config's "
            "backbone, or merge it with `xomni train merge-lora`)"
        )
    elif result.checkpoint is not None:
        print(f"backbone weights: {result.checkpoint / 'backbone'} (use it as backbone.weights)")


def _export(args: argparse.Namespace) -> int:
    from xomni_export.command import SLOTS, run_export
    from xomni_export.serving.command import serving_options

    from .models import default_pipeline_config

    components = SLOTS if args.component == "all" else (args.component,)
    results = run_export(
        args.config or default_pipeline_config(),
        overrides=args.overrides,
        components=components,
        export_format=args.format,
        out=args.out,
        precision=args.dtype,
        validate=args.validate,
        triton_backend=args.triton_backend,
        show_progress=not args.no_progress,
        force=args.force,
        serving=serving_options(args, args.triton_backend) if args.format == "triton" else None,
    )
    for slot, result in results.items():
        graphs = ", ".join(result.manifest["graphs"])
        check = result.parity.summary() if result.parity is not None else "not validated"
        print(f"{slot}: {result.folder} ({graphs}); {check}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .convert import ConvertOptions
    from .registry import discover_converters, find_converter

    if args.list:
        records = discover_converters()
        for record in records:
            if record.usable and record.spec:
                state = record.spec.description
            else:
                state = f"{record.status}: {record.error}"
            print(f"{record.name}  ({record.distribution})  {state}")
        if not records:
            print("no converters installed (none registers an xomni.converters entry point)")
        return 0
    if not args.format:
        raise XomniError("name a converter: xomni convert NAME SRC DST (xomni convert --list shows them)")
    spec = find_converter(args.format)
    own = _converter_parser(spec).parse_args(args.arguments)
    options = ConvertOptions(
        dtype=own.dtype,
        force=own.force,
        show_progress=not own.no_progress,
        **{option.name: getattr(own, option.name) for option in spec.options},
    )
    result = spec.load()(Path(own.src), Path(own.dst), spec.resolve(options))
    for note in result.notes:
        print(f"  {note}")
    print(f"wrote {result.dst}: {', '.join(result.components)} and {result.pipeline_config.name}")
    print(f"try: xomni generate --config {result.pipeline_config} 'a red cube on a table'")
    return 0


def _converter_parser(spec: ConverterSpec) -> argparse.ArgumentParser:
    """The command line of one converter: the shared arguments and the options it declares."""
    from .convert import CONVERT_DTYPES

    parser = argparse.ArgumentParser(prog=f"xomni convert {spec.name}", description=spec.description)
    parser.add_argument("src", help="folder of the published checkpoint")
    parser.add_argument("dst", help="folder to write; must not exist unless --force")
    for option in spec.options:
        if option.kind == "flag":
            parser.add_argument(option.cli_flag, dest=option.name, action="store_true", help=option.help)
        else:
            parser.add_argument(
                option.cli_flag, dest=option.name, metavar=option.metavar, help=option.help
            )
    parser.add_argument(
        "--dtype", choices=CONVERT_DTYPES, help="cast weights (default: keep the stored dtype)"
    )
    parser.add_argument("--force", action="store_true", help="replace DST if it exists")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _bench_grammar(args: argparse.Namespace) -> int:
    from .synthetic import grammar

    print(json.dumps(grammar.vocabulary(), indent=2) if args.json else grammar.describe())
    return 0


def _bench_compose(args: argparse.Namespace) -> int:
    from .synthetic import CATEGORIES, bench, sample_scenes

    categories = CATEGORIES
    if args.categories:
        categories = tuple(c.strip() for c in args.categories.split(",") if c.strip())
    if args.specs and not args.images:
        raise XomniError("--specs goes with --images")
    if args.overrides and not args.config:
        raise XomniError("--set goes with --config")
    if args.images:
        if not Path(args.images).is_dir():
            raise XomniError(f"--images: folder {args.images} does not exist")
        pairs = bench.read_prompts(args.specs) if args.specs else None
        files, entries = bench.read_generation_folder(args.images, pairs)
        images = bench.open_images(files)
        info: dict[str, Any] = {"mode": "images", "images": str(args.images)}
        if args.specs:
            info["specs"] = str(args.specs)
    else:
        scenes = sample_scenes(
            args.split,
            args.n,
            seed=args.seed,
            categories=categories,
            width_px=args.width,
            height_px=args.height,
        )
        info = {
            "split": args.split,
            "seed": args.seed,
            "n": args.n,
            "height_px": args.height,
            "width_px": args.width,
        }
        if args.write_prompts:
            count = bench.write_prompts(args.write_prompts, scenes)
            print(f"wrote {count} {args.split} prompts to {args.write_prompts}")
            return 0
        if args.config:
            images = bench.generate_images(
                args.config, scenes, overrides=args.overrides, seed=args.seed, batch_size=args.batch_size
            )
            info = {"mode": "config", "config": str(args.config), **info}
        elif args.ground_truth:
            images = bench.ground_truth_images(scenes)
            info = {"mode": "ground-truth", **info}
        else:
            raise XomniError(
                "choose the images: --ground-truth, --config CONFIG, or --images DIR [--specs FILE]"
            )
    report = bench.score_images(
        images, entries if args.images else scenes, show_progress=not args.no_progress, info=info
    )
    print(report.table())
    if args.out:
        report.write_json(args.out)
        print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    run()
