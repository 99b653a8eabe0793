"""Training metrics: one JSON object per step in ``metrics.jsonl``, and a plot of the rewards.

A run that resumes from a checkpoint first drops the lines of steps after it (a killed run may
have logged steps it never saved, and may have left half a line), so the file always describes
one consistent run. matplotlib draws the plot; it is imported on first use, without pyplot, so
the Agg canvas is used whatever the user's default backend is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_file
from ..errors import ConfigError

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "rewards.png"


TENSORBOARD_DIR = "tensorboard"


class TensorBoardLog:
    """Every numeric metric of each record as a TensorBoard scalar (nested ones as ``a/b``) in
    ``OUTPUT/tensorboard``. A resumed run first drops the events of steps after its checkpoint,
    as :class:`MetricsLog` drops their lines."""

    def __init__(self, output_dir: Path, *, resume_step: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ConfigError(
                "training.report_to: tensorboard needs the tensorboard package (pip install 'xomni[train]')"
            ) from exc
        self._writer = SummaryWriter(str(output_dir / TENSORBOARD_DIR), purge_step=resume_step + 1)

    def write(self, record: dict[str, Any]) -> None:
        for name, value in _scalars(record):
            self._writer.add_scalar(name, value, global_step=record["step"])
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _scalars(record: dict[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    scalars: list[tuple[str, float]] = []
    for key, value in record.items():
        if isinstance(value, dict):
            scalars += _scalars(value, f"{prefix}{key}/")
        elif isinstance(value, int | float) and not isinstance(value, bool) and key != "step":
            scalars.append((prefix + key, float(value)))
    return scalars


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics file; lines that do not parse (a write cut short) are skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


class MetricsLog:
    """Appends one record per step to ``metrics.jsonl``."""

    def __init__(self, output_dir: Path, *, resume_step: int) -> None:
        """Keep the records of steps ``<= resume_step`` (0: start a new file)."""
        self.path = output_dir / METRICS_FILE
        kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
        with atomic_file(self.path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self.records = kept

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
            file.flush()


def plot_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _axes() -> tuple[Any, Any]:
    """A figure drawn with the Agg canvas (no pyplot, no display) and its one set of axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 4.0), dpi=100)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot(1, 1, 1)


def _save_figure(figure: Any, axes: Any, path: Path, *, ylabel: str, title: str) -> Path:
    axes.set_xlabel("step")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def plot_loss(records: Sequence[dict[str, Any]], path: Path) -> Path:
    """Draw the training loss per step (log scale when it spans more than a factor of ten)."""
    figure, axes = _axes()
    steps = [r["step"] for r in records]
    losses = [r["loss"] for r in records]
    axes.plot(steps, losses, color="tab:blue", linewidth=1.5, label="image-token NLL")
    evaluated = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if evaluated:
        eval_steps, eval_losses = zip(*evaluated, strict=True)
        axes.plot(eval_steps, eval_losses, "o-", color="tab:orange", linewidth=1.5, label="validation NLL")
        losses = losses + list(eval_losses)
    if losses and min(losses) > 0 and max(losses) / min(losses) > 10:
        axes.set_yscale("log")
    return _save_figure(figure, axes, path, ylabel="loss (nats per token)", title="SFT loss per step")


def plot_rewards(records: Sequence[dict[str, Any]], path: Path) -> Path:
    """Draw the mean total reward per step (with its deviation as a band) and each reward's mean."""
    figure, axes = _axes()
    steps = [r["step"] for r in records]
    mean = [r["reward_mean"] for r in records]
    std = [r["reward_std"] for r in records]
    axes.plot(steps, mean, color="tab:blue", linewidth=2.0, label="total reward")
    axes.fill_between(
        steps,
        [m - s for m, s in zip(mean, std, strict=True)],
        [m + s for m, s in zip(mean, std, strict=True)],
        color="tab:blue",
        alpha=0.2,
        linewidth=0,
    )
    names = sorted({key for r in records for key in r.get("rewards", {})})
    for name in names:
        values = [r.get("rewards", {}).get(name, {}).get("mean", math.nan) for r in records]
        axes.plot(steps, values, linewidth=1.0, label=name)
    return _save_figure(figure, axes, path, ylabel="reward", title="GRPO rewards per step")
