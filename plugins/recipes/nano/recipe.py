"""``xomni train nano``: every stage of the xomni-nano pipeline, from synthetic scenes to GRPO.

Stages, each seeded and each written to its own folder under ``OUT`` before the next starts:

1. ``tokenizer``: SigLIP-VQ trained with IBQ on rendered train-split scenes.
2. ``decoder``: the semantic FLUX decoder's VAE, then its transformer on (VAE latent, semantic
   latent) pairs of the same scenes.
3. ``sft``: the X-Omni backbone fine-tuned on train-split captions (``xomni train sft``).
4. ``grpo``: GRPO of that backbone on rl-split prompts, rewarded by the compositional judge
   (``xomni train grpo`` with the ``compose-judge`` reward).
5. ``eval``: SFT single sample, SFT best-of-N and GRPO single sample on the eval split.

``OUT/model`` is then a self-contained pipeline folder (``pipeline.yaml``, the three components
and ``provenance.json`` with the command, settings, timings, benchmark and file hashes).
With ``resume``, finished stages (listed in ``OUT/stages.json``) are loaded instead of rerun, and
a stopped ``sft`` or ``grpo`` stage continues from its newest checkpoint, exactly as if it had not
stopped. The settings of stages not yet started may change between runs (``--set
grpo.steps=600`` after the ``sft`` stage); those of a started stage may not.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from xomni_core import InputError, XomniError, __version__, atomic_directory, atomic_file
from xomni_core.models import combined_hash, hash_files
from xomni_core.pipelines import write_model_index
from xomni_core.synthetic import SceneSpec, render_scene, render_shape_map, sample_scenes
from xomni_plugins.decoders.flux_semantic.model import FluxSemanticDecoder
from xomni_plugins.decoders.flux_semantic.params import FluxSemanticParams
from xomni_plugins.decoders.flux_semantic.training import (
    fit_latent_scaling,
    packed_latents,
    train_flow,
    train_vae,
)
from xomni_plugins.tokenizers.siglip_vq.model import SigLIPVQTokenizer
from xomni_plugins.tokenizers.siglip_vq.params import SigLIPVQParams
from xomni_plugins.tokenizers.siglip_vq.training import train_ibq

from .evaluate import ComparisonReport, compare, eval_scenes
from .settings import NanoData, NanoRecipe, pipeline_template

STAGES = ("tokenizer", "decoder", "sft", "grpo", "eval")
#: The recipe settings each stage reads (besides the earlier stages' results); ``threads`` is the
#: machine's, free to change between runs.
STAGE_SETTINGS: dict[str, tuple[str, ...]] = {
    "tokenizer": ("seed", "data", "tokenizer"),
    "decoder": ("vae", "flow"),
    "sft": ("sft",),
    "grpo": ("grpo", "cfg_scale", "decoder_noise_scale"),
    "eval": ("eval",),
}
REWARD = {"plugin": "compose-judge", "params": {"score": "checks"}}


@dataclass(frozen=True)
class NanoResult:
    """Where the trained pipeline is and how it scored."""

    model_dir: Path
    report: ComparisonReport
    seconds: dict[str, float]


def run_nano_recipe(
    out_dir: str | os.PathLike[str],
    recipe: NanoRecipe | None = None,
    *,
    resume: bool = False,
    show_progress: bool = True,
    command: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
) -> NanoResult:
    """Run the recipe into ``out_dir``; see the module docstring for the stages."""
    _check_packages(until="eval")
    run = _start(out_dir, recipe, resume, show_progress, log)
    run.run_stages(until="eval")
    model_dir = run.write_model_folder(command or sys.argv)
    report = ComparisonReport.read(run.out / "eval" / "comparison.json")
    return NanoResult(model_dir, report, run.seconds())


def train_nano_stages(
    out_dir: str | os.PathLike[str],
    recipe: NanoRecipe | None = None,
    *,
    until: str,
    resume: bool = False,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, float]:
    """Run the recipe's stages up to and including ``until`` into ``out_dir``, as
    :func:`run_nano_recipe` does (the same folders, the same resume), without writing the model
    folder; returns each finished stage's seconds. ``until="decoder"`` trains the tokenizer and
    decoder alone, enough to measure their ceiling."""
    if until not in STAGES:
        raise InputError(f"until must be one of {', '.join(STAGES)}, got {until!r}")
    _check_packages(until=until)
    run = _start(out_dir, recipe, resume, show_progress, log)
    run.run_stages(until=until)
    return run.seconds()


#: Stages that import an optional package, with the package and the extra that installs it.
_STAGE_PACKAGES = (
    ("sft", "accelerate", "train"),
    ("grpo", "rapidocr_onnxruntime", "ocr"),  # the judge reads the words of word scenes
)


def _check_packages(*, until: str) -> None:
    """Refuse before the first stage, not hours into the run, when a later stage's package is missing."""
    needed = STAGES[: STAGES.index(until) + 1]
    missing = [
        (stage, package, extra)
        for stage, package, extra in _STAGE_PACKAGES
        if stage in needed and importlib.util.find_spec(package) is None
    ]
    if missing:
        packages = " and ".join(f"{package} (the {stage} stage)" for stage, package, _ in missing)
        extras = ",".join(extra for _, _, extra in missing)
        raise XomniError(f"the recipe needs {packages}, not installed here: pip install 'xomni[{extras}]'")


def _start(
    out_dir: str | os.PathLike[str],
    recipe: NanoRecipe | None,
    resume: bool,
    show_progress: bool,
    log: Callable[[str], None],
) -> _Run:
    recipe = recipe or NanoRecipe()
    out = Path(out_dir).resolve()
    if out.exists() and any(out.iterdir()) and not resume:
        raise InputError(f"{out} is not empty: pick a new folder, or pass --resume to continue a run in it")
    out.mkdir(parents=True, exist_ok=True)
    if recipe.threads is not None:
        torch.set_num_threads(recipe.threads)
    run = _Run(out, recipe, show_progress, log)
    run.check_same_recipe()
    return run


class _Run:
    def __init__(
        self, out: Path, recipe: NanoRecipe, show_progress: bool, log: Callable[[str], None]
    ) -> None:
        self.out = out
        self.recipe = recipe
        self.show_progress = show_progress
        self.log = log
        self.state_path = out / "stages.json"
        self.state: dict[str, Any] = (
            json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        )
        self.continuing = False  # whether the running stage continues a stopped run

    # ---------------------------------------------------------------------------- bookkeeping

    def check_same_recipe(self) -> None:
        """Refuse settings that differ from those a started stage ran with."""
        recorded = self.state.get("recipe")
        current = self.recipe.model_dump(mode="json")
        if recorded is not None:
            recorded = _with_defaults(recorded)
            started = set(self.state.get("started", [])) | set(self.state.get("stages", {}))
            for name in (n for n in STAGES if n in started):
                changed = [
                    change
                    for key in STAGE_SETTINGS[name]
                    for change in _changes(key, recorded.get(key), current[key])
                ]
                if changed:
                    raise InputError(
                        f"{self.out} started the {name} stage with other settings ({'; '.join(changed)}): "
                        "resume it with the settings it started with, or start in a new folder"
                    )
        self.state["recipe"] = current
        self._save_state()

    def run_stages(self, until: str) -> None:
        bodies = {
            "tokenizer": self.train_tokenizer,
            "decoder": self.train_decoder,
            "sft": self.train_backbone,
            "grpo": self.reinforce_backbone,
            "eval": self.evaluate,
        }
        for name in STAGES[: STAGES.index(until) + 1]:
            self.stage(name, bodies[name])

    def stage(self, name: str, body: Callable[[], dict[str, Any]]) -> None:
        done = self.state.setdefault("stages", {})
        if name in done:
            self.log(f"[{name}] done in an earlier run ({done[name]['seconds']:.0f} s), skipped")
            return
        started = self.state.setdefault("started", [])
        self.continuing = name in started
        if self.continuing:
            self.log(f"[{name}] continuing a stopped run")
        else:
            self.log(f"[{name}] starting")
            started.append(name)
            self._save_state()
        start = time.perf_counter()
        summary = body()
        seconds = time.perf_counter() - start
        done[name] = {"seconds": seconds, **summary}
        self._save_state()
        details = ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()
        )
        self.log(f"[{name}] finished in {seconds:.0f} s" + (f": {details}" if details else ""))

    def seconds(self) -> dict[str, float]:
        return {name: float(s["seconds"]) for name, s in self.state.get("stages", {}).items()}

    def _save_state(self) -> None:
        with atomic_file(self.state_path) as tmp:
            tmp.write_text(json.dumps(self.state, indent=2) + "\n")

    # ---------------------------------------------------------------------------------- data

    @cached_property
    def train_scenes(self) -> list[SceneSpec]:
        """The train-split scenes that stages 1-2 learn from."""
        return image_scenes(self.recipe.data)

    @cached_property
    def pixels(self) -> torch.Tensor:
        """The train-split images in ``[-1, 1]``, rendered on first use."""
        rendered = np.stack([np.asarray(render_scene(scene)) for scene in self.train_scenes])
        return torch.from_numpy(rendered).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)

    @cached_property
    def shape_maps(self) -> torch.Tensor:
        """What covers each pixel of :attr:`pixels`: ``SHAPE_MAP_CLASSES`` indices, or with
        ``letter_classes`` ``LETTER_MAP_CLASSES`` ones (uint8)."""
        letters = self.recipe.tokenizer.letter_classes
        maps = np.stack([np.asarray(render_shape_map(scene, letters=letters)) for scene in self.train_scenes])
        return torch.from_numpy(maps)

    def _config(self, **sections: Any) -> dict[str, Any]:
        config = pipeline_template()
        config["runtime"]["seed"] = self.recipe.seed
        if self.recipe.decoder_noise_scale is not None:
            config["generation"]["noise_scale"] = self.recipe.decoder_noise_scale
        if self.recipe.cfg_scale != 1.0:
            config["generation"]["sampling"]["cfg_scale"] = self.recipe.cfg_scale
        for slot in ("tokenizer", "backbone", "decoder"):
            folder = sections.pop(slot, None)
            if folder is not None:
                config[slot] = {"plugin": config[slot]["plugin"], "weights": str(folder)}
        config.update(sections)
        return config

    def _write_prompts(self, name: str, scenes: Sequence[SceneSpec]) -> Path:
        path = self.out / name
        with atomic_file(path) as tmp:
            tmp.write_text(
                "".join(json.dumps({"prompt": s.caption, "metadata": s.metadata()}) + "\n" for s in scenes)
            )
        return path

    def _write_config(self, name: str, config: dict[str, Any]) -> Path:
        path = self.out / name
        with atomic_file(path) as tmp:
            tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # -------------------------------------------------------------------------------- stages

    def train_tokenizer(self) -> dict[str, Any]:
        params = SigLIPVQParams.model_validate(pipeline_template()["tokenizer"]["params"])
        tokenizer = SigLIPVQTokenizer.from_params(params, seed=self.recipe.seed)
        settings = self.recipe.tokenizer
        shape_maps = self.shape_maps if settings.segmentation_weight > 0 else None
        result = train_ibq(
            tokenizer, self.pixels, settings, segments=shape_maps, show_progress=self.show_progress
        )
        tokenizer.save_pretrained(self.out / "tokenizer")
        record = {"reconstruction_mse": result.reconstruction, "codes_used": result.codes_used}
        if "segmentation" in result.history[-1]:
            record["segmentation_ce"] = result.history[-1]["segmentation"]
        return record

    def train_decoder(self) -> dict[str, Any]:
        params = FluxSemanticParams.model_validate(pipeline_template()["decoder"]["params"])
        decoder = FluxSemanticDecoder.from_params(params, seed=self.recipe.seed)
        vae = train_vae(decoder, self.pixels, self.recipe.vae, show_progress=self.show_progress)
        fit_latent_scaling(decoder, self.pixels[:1024])
        tokenizer = SigLIPVQTokenizer.from_pretrained(self.out / "tokenizer")
        clean = packed_latents(decoder, self.pixels)
        with torch.no_grad():
            semantic = torch.cat(
                [
                    tokenizer.decode(tokenizer.encode(self.pixels[i : i + 256])).values
                    for i in range(0, len(self.pixels), 256)
                ]
            )
        tokens, grid = decoder.semantic_tokens(semantic)
        flow = train_flow(decoder, clean, tokens, grid, self.recipe.flow, show_progress=self.show_progress)
        decoder.save_pretrained(self.out / "decoder")
        return {"vae_loss": vae.final_loss, "flow_loss": flow.final_loss}

    def train_backbone(self) -> dict[str, Any]:
        from xomni_core.training.sft import train_sft

        sft = self.recipe.sft
        px = self.recipe.data.image_px
        config = self._config(
            tokenizer=self.out / "tokenizer",
            decoder=self.out / "decoder",
            training={
                "sft": {
                    "synthetic": {"split": "train", "n": sft.scenes, "seed": self.recipe.data.seed},
                    "height_px": px,
                    "width_px": px,
                    "batch_size": sft.batch_size,
                    "learning_rate": sft.learning_rate,
                    "weight_decay": sft.weight_decay,
                    "caption_drop": sft.caption_drop,
                    "warmup_steps": sft.warmup_steps,
                    "decay": sft.decay,
                    "steps": sft.steps,
                    "checkpoint_every": sft.checkpoint_every,
                    "keep_checkpoints": 1,
                    "output_dir": str(self.out / "sft"),
                }
            },
        )
        result = train_sft(
            self._write_config("sft.yaml", config), resume=self.continuing, show_progress=self.show_progress
        )
        assert result.checkpoint is not None
        _replace_dir(result.checkpoint / "backbone", self.out / "backbone-sft")
        return {"loss": float(result.records[-1]["loss"])}

    def reinforce_backbone(self) -> dict[str, Any]:
        from xomni_core.training.grpo import train_grpo

        grpo = self.recipe.grpo
        px = self.recipe.data.image_px
        scenes = rl_scenes(self.recipe, grpo.prompts + grpo.eval_prompts)
        prompts = self._write_prompts("rl-prompts.jsonl", scenes[: grpo.prompts])
        held_out = None
        if grpo.eval_prompts:
            held_out = {
                "prompts_file": str(self._write_prompts("rl-eval-prompts.jsonl", scenes[grpo.prompts :])),
                "every": grpo.eval_every,
            }
        config = self._config(
            tokenizer=self.out / "tokenizer",
            backbone=self.out / "backbone-sft",
            decoder=self.out / "decoder",
            rewards=[_reward(correct_bonus=grpo.correct_bonus, attribute_credit=grpo.attribute_credit)],
            training={
                "grpo": {
                    "steps": grpo.steps,
                    "group_size": grpo.group_size,
                    "prompts_per_step": grpo.prompts_per_step,
                    "updates_per_rollout": grpo.updates_per_rollout,
                    "learning_rate": grpo.learning_rate,
                    "warmup_steps": grpo.warmup_steps,
                    "decay": grpo.decay,
                    "kl_coef": grpo.kl_coef,
                    "clip_epsilon": grpo.clip_epsilon,
                    "regional_credit": grpo.regional_credit,
                    "sampling": {**grpo.sampling.model_dump(), "cfg_scale": self.recipe.cfg_scale},
                    "height_px": px,
                    "width_px": px,
                    "num_inference_steps": grpo.num_inference_steps,
                    "prompts_file": str(prompts),
                    "eval": held_out,
                    "checkpoint_every": grpo.checkpoint_every,
                    "keep_checkpoints": 1,
                    "output_dir": str(self.out / "grpo"),
                }
            },
        )
        result = train_grpo(
            self._write_config("grpo.yaml", config), resume=self.continuing, show_progress=self.show_progress
        )
        assert result.checkpoint is not None
        _replace_dir(result.checkpoint / "backbone", self.out / "backbone-grpo")
        rewards = [float(r["reward_mean"]) for r in result.records]
        tenth = max(1, len(rewards) // 10)
        summary = {
            "reward_first_tenth": sum(rewards[:tenth]) / tenth,
            "reward_last_tenth": sum(rewards[-tenth:]) / tenth,
        }
        summary["prompts_holding_held_out"] = sum(s.held_out() for s in scenes[: grpo.prompts])
        if held_out is not None:
            summary["eval_reward_last"] = float(result.records[-1]["eval_reward"])
        return summary

    def evaluate(self) -> dict[str, Any]:
        folders = {"tokenizer": self.out / "tokenizer", "decoder": self.out / "decoder"}
        sft = self._write_config(
            "pipeline-sft.yaml", self._config(**folders, backbone=self.out / "backbone-sft", rewards=[REWARD])
        )
        grpo = self._write_config(
            "pipeline-grpo.yaml",
            self._config(**folders, backbone=self.out / "backbone-grpo", rewards=[REWARD]),
        )
        report = compare(
            sft,
            grpo,
            self.recipe.eval,
            best_of=self.recipe.best_of,
            image_px=self.recipe.data.image_px,
            show_progress=self.show_progress,
            reports_dir=self.out / "eval",
        )
        report.write(self.out / "eval")
        return {name: round(100 * acc, 1) for name, acc in report.overall().items()}

    # ---------------------------------------------------------------------------- the result

    def write_model_folder(self, command: Sequence[str]) -> Path:
        """``OUT/model``: the GRPO pipeline with relative weights, and its provenance."""
        target = self.out / "model"
        config = self._config(tokenizer="tokenizer", backbone="backbone", decoder="decoder")
        report = json.loads((self.out / "eval" / "comparison.json").read_text())
        with atomic_directory(target) as tmp:
            shutil.copytree(self.out / "tokenizer", tmp / "tokenizer")
            shutil.copytree(self.out / "backbone-grpo", tmp / "backbone")
            shutil.copytree(self.out / "decoder", tmp / "decoder")
            (tmp / "pipeline.yaml").write_text(
                "# xomni-nano, trained by `xomni train nano` (see provenance.json)\n"
                + yaml.safe_dump(config, sort_keys=False)
            )
            write_model_index(tmp, capability_flags={"understanding": False})
            files = hash_files(tmp)
            provenance = {
                "name": "xomni-nano",
                "xomni_version": __version__,
                "command": " ".join(_portable_command(command)),
                "recipe": self.recipe.model_dump(mode="json"),
                "seconds": self.seconds(),
                "machine": {
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "processor": platform.processor() or platform.machine(),
                },
                "benchmark": {"overall": report["overall"], "categories": report["categories"]},
                "sha256": files,
                "weights_sha256": combined_hash(files),
            }
            (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
        return target


def image_scenes(data: NanoData) -> list[SceneSpec]:
    """The train-split scenes of stages 1-2: ``train_images`` of every category, then
    ``word_images`` word scenes."""
    size = {"seed": data.seed, "width_px": data.image_px, "height_px": data.image_px}
    scenes = sample_scenes("train", data.train_images, **size)
    if data.word_images:
        # Indices past train_images, so no word scene repeats the draws of a mixed scene.
        words = sample_scenes("train", data.train_images + data.word_images, categories=("text",), **size)
        scenes += words[data.train_images :]
    return scenes


#: Settings added to the recipe after runs were recorded without them, at the values those runs
#: ran with where today's default differs.
_ADDED_AT: dict[tuple[str, str], Any] = {
    ("data", "word_images"): 0,
    ("vae", "refine_steps"): 0,
    ("vae", "refine_learning_rate"): 1e-3,
    ("vae", "refine_encoder"): False,
    ("tokenizer", "letter_classes"): False,
    ("grpo", "decay"): "none",
    ("grpo", "held_out_prompts"): False,
    ("grpo", "attribute_credit"): 0.0,
}


def rl_scenes(recipe: NanoRecipe, n: int) -> list[SceneSpec]:
    """The first ``n`` rl-split scenes of GRPO; with ``grpo.held_out_prompts``, held-out pairs and
    words included (``grpo.held_out_share`` of them, where set) and no scene whose caption the
    comparison judges."""
    size = {"width_px": recipe.data.image_px, "height_px": recipe.data.image_px}
    if not recipe.grpo.held_out_prompts:
        return sample_scenes("rl", n, seed=recipe.data.seed, **size)
    judged = {s.caption for s in eval_scenes(recipe.eval, recipe.data.image_px)}
    share = recipe.grpo.held_out_share
    draw = n
    while True:  # a longer draw extends a shorter one, so the order holds
        draw *= 2
        pool = sample_scenes("rl", draw, seed=recipe.data.seed, rl_held_out=True, **size)
        kept = [s for s in pool if s.caption not in judged]
        prompts = kept[:n] if share is None else _spread_held_out(kept, n, share)
        if len(prompts) == n:
            return prompts


def _spread_held_out(scenes: Sequence[SceneSpec], n: int, share: float) -> list[SceneSpec]:
    """``n`` of ``scenes`` in their order, a held-out one at every place where the running count
    ``floor(place * share)`` steps up (so any prefix holds its share); fewer if they run out."""
    held_out = iter([s for s in scenes if s.held_out()])
    seen = iter([s for s in scenes if not s.held_out()])
    spread: list[SceneSpec] = []
    for place in range(n):
        stream = held_out if math.floor((place + 1) * share) > math.floor(place * share) else seen
        scene = next(stream, None)
        if scene is None:
            break
        spread.append(scene)
    return spread


def _with_defaults(recorded: Any) -> Any:
    """A recorded recipe with the settings added since it was written at the values that reproduce
    what ran before them; as recorded when it no longer validates."""
    try:
        filled = {key: dict(value) if isinstance(value, dict) else value for key, value in recorded.items()}
        for (section, name), value in _ADDED_AT.items():
            if isinstance(filled.get(section), dict):
                filled[section].setdefault(name, value)
        return NanoRecipe.model_validate(filled).model_dump(mode="json")
    except (ValueError, AttributeError):
        return recorded


def _reward(*, correct_bonus: float, attribute_credit: float) -> dict[str, Any]:
    """The recipe's reward; a bonus or credit only where set, so configs written before them stay
    as they were."""
    extra = {"correct_bonus": correct_bonus, "attribute_credit": attribute_credit}
    return {**REWARD, "params": {**REWARD["params"], **{k: v for k, v in extra.items() if v}}}


def _changes(key: str, recorded: Any, current: Any) -> list[str]:
    """``key: recorded -> current`` for each leaf setting under ``key`` that differs."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        return [
            change
            for name in sorted(recorded.keys() | current.keys())
            for change in _changes(f"{key}.{name}", recorded.get(name), current.get(name))
        ]
    return [] if recorded == current else [f"{key}: {recorded!r} -> {current!r}"]


def _replace_dir(source: Path, target: Path) -> None:
    with atomic_directory(target) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)


def _portable_command(command: Sequence[str]) -> list[str]:
    """The command line with the program as ``xomni``, not a path on this machine."""
    words = list(command)
    if words and Path(words[0]).name in ("xomni", "cli.py", "__main__.py"):
        words[0] = "xomni"
    return words
