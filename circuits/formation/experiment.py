"""The formation experiment behind ``circuits train``: one training run per clamp, curves and JSON.

``run_formation(settings, clamps, out)`` trains the unclamped model and each clamped one
(checkpoints under ``out/checkpoints/<clamp>``, resumed when present), then
``FormationResult.write(out)`` writes formation.json, formation.png and formation.svg.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np

from circuits.formation.clamps import Clamp
from circuits.formation.defaults import DEFAULT_CLAMPS
from circuits.formation.measures import Measures
from circuits.formation.training import RunResult, Trainer, TrainSettings
from circuits.plots import training_curves
from circuits.utils import ResultFiles, json_text, step_progress

FORMAT = "circuits-formation"
SCHEMA_VERSION = 2
PANELS = (
    ("loss", "loss (nats)"),
    ("accuracy", "accuracy"),
    ("previous_token", "previous-token score\n(best first-layer head)"),
    ("induction_strength", "induction strength\n(best last-layer head)"),
    ("copy", "copy score, nats\n(best last-layer head)"),
    ("k_composition", "K-composition, weights only\n(best pair, x random baseline)"),
)


@dataclasses.dataclass
class FormationResult(ResultFiles):
    """The runs of one formation experiment (same settings, one clamp each)."""

    FILES = ("formation.json", "formation.png", "formation.svg")
    KEEP = ("checkpoints",)  # the runs' checkpoints, resumed from

    settings: TrainSettings
    runs: list[RunResult]

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "settings": dataclasses.asdict(self.settings),
            "model_config": self.settings.model_config().to_dict(),
            "context_baseline": self.runs[0].context_baseline if self.runs else None,
            "runs": [run.to_dict() for run in self.runs],
        }

    def to_json(self) -> str:
        return json_text(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "FormationResult":
        data = json.loads(text)
        if data.get("format") != FORMAT or data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"not a {FORMAT} schema {SCHEMA_VERSION} file (format {data.get('format')!r}, "
                             f"schema_version {data.get('schema_version')!r}); fix: train again to rewrite it")
        runs = [
            RunResult(run["clamp"], [[Measures.from_dict(m) for m in h] for h in run["seeds"]], data["context_baseline"])
            for run in data["runs"]
        ]
        return cls(TrainSettings(**data["settings"]), runs)

    def figures(self) -> dict[str, bytes]:
        """{"png": ..., "svg": ...}: loss, accuracy, the three subcircuit measures and K-composition against step,
        one colour per clamp (mean over seeds, the seeds' range shaded, the mean phase change dotted)."""
        runs = [{"label": run.clamp, "steps": [m.step for m in run.history], "curves": _curves(run), "phase": _mean_phase_change(run)}
                for run in self.runs]
        seeds = f", mean of {self.settings.seeds} seeds" if self.settings.seeds > 1 else ""
        title = f"Induction-head formation: {self.settings.formation_task.name} task, {self.settings.n_layers}-layer model{seeds}"
        return training_curves(runs, PANELS, baseline=self.runs[0].context_baseline if self.runs else None, title=title)

    def __repr__(self) -> str:
        phases = "; ".join(f"{clamp}: phase change {phase}" for clamp, phase, *_ in self.summary_rows())
        return f"FormationResult({self.settings.task} task, {self.settings.steps} steps, {len(self.runs)} runs; {phases})"

    def _repr_html_(self) -> str:
        """The training curves (the SVG figure)."""
        svg = self.figures()["svg"].decode()
        return svg[svg.index("<svg"):]

    def files(self) -> dict[str, str | bytes]:
        """formation.json, formation.png and formation.svg."""
        figures = self.figures()
        return dict(zip(self.FILES, (self.to_json(), figures["png"], figures["svg"])))

    def summary_rows(self) -> list[tuple[str, str, float, float, float, float, float, float]]:
        """(clamp, phase change, then the final loss, accuracy, previous-token, induction strength, copy and
        K-composition), means over seeds. The phase change reads "mean ± std", with "(n of S seeds)" when
        only n seeds had one, or "none"."""
        rows = []
        for run in self.runs:
            curves = _curves(run)
            rows.append((run.clamp, _phase_text(run), *(float(curves[key][:, -1].mean()) for key, _ in PANELS)))
        return rows


def _curves(run: RunResult) -> dict[str, np.ndarray]:
    """{panel key: f32[seeds, checkpoints]} of the summary scalars."""
    return {key: np.array([[m.summary()[key] for m in history] for history in run.histories]) for key, _ in PANELS}


def _found_phase_changes(run: RunResult) -> list[int]:
    """The phase-change steps of the seeds that had one."""
    return [step for step in run.phase_changes if step is not None]


def _mean_phase_change(run: RunResult) -> float | None:
    steps = _found_phase_changes(run)
    return float(np.mean(steps)) if steps else None


def _phase_text(run: RunResult) -> str:
    steps = _found_phase_changes(run)
    if not steps:
        return "none"
    text = f"{np.mean(steps):.0f}" + (f" ± {np.std(steps):.0f}" if len(run.histories) > 1 else "")
    return text + (f" ({len(steps)} of {len(run.histories)} seeds)" if len(steps) < len(run.histories) else "")


def checkpoint_directory(out: Path, clamp: Clamp) -> Path:
    """out/checkpoints/<clamp name with anything but letters, digits, - and + replaced by _>."""
    return out / "checkpoints" / re.sub(r"[^A-Za-z0-9+\-]", "_", clamp.name)


def run_formation(
    settings: TrainSettings,
    clamps: tuple[Clamp, ...] = tuple(Clamp.parse(name) for name in DEFAULT_CLAMPS),
    out: str | Path | None = None,
    *,
    show_progress: bool = True,
) -> FormationResult:
    """Train one run per clamp (resuming from ``out/checkpoints`` when there), with a progress bar each.

    Every clamp is checked against the model before the first run starts."""
    for clamp in clamps:
        clamp.check(settings.model_config())
    runs = []
    for clamp in clamps:
        directory = None if out is None else checkpoint_directory(Path(out), clamp)
        trainer = Trainer(settings, clamp, directory)
        with step_progress(f"train {clamp.name:<16}", settings.steps, trainer.step, enabled=show_progress) as update:
            run = trainer.train(
                lambda seeds: update(seeds[0].step, loss=np.mean([m.loss for m in seeds]), accuracy=np.mean([m.accuracy for m in seeds]))
            )
        runs.append(run)
    return FormationResult(settings, runs)
