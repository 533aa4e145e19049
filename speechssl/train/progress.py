"""Training feedback: a progress bar, TensorBoard scalars and ``metrics.jsonl`` rows.

The bar comes from :func:`speechssl.progress_bar.progress_bar`: animated on a terminal,
one plain line every 30 s when the output goes to a log file.

Only rank 0 creates a ``ProgressWriter`` that writes; the other ranks get one with
``enabled=False`` whose methods do nothing, so the training loop has no rank tests.

Example:
    >>> import json, tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> writer = ProgressWriter(folder, total_steps=10, tensorboard=False, show_bar=False)
    >>> writer.log({"step": 1, "split": "train", "loss": 2.5, "lr": 1e-3})
    >>> writer.close()
    >>> json.loads((folder / "metrics.jsonl").read_text())["loss"]
    2.5
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from speechssl.progress_bar import progress_bar
from speechssl.safe_io import atomic_write

__all__ = [
    "LoopState",
    "ProgressWriter",
    "new_window",
    "read_metrics",
    "truncate_metrics",
    "window_means",
    "window_sums",
]

logger = logging.getLogger("speechssl.train")

# Keys shown in the progress bar, in this order, with their format.
_BAR_KEYS = {
    "loss": "{:.4g}",
    "lr": "{:.2e}",
    "utterances_per_s": "{:.1f}",
    "audio_s_per_s": "{:.0f}",
}


def _parse_metrics(path: Path) -> tuple[list[dict], bool]:
    """``(rows, cut)``: the rows of a ``metrics.jsonl``; ``cut`` when its last line was cut
    mid-write (a run killed while logging), which is left out. A bad line elsewhere is a
    one-line ``ValueError`` naming the file and the line."""
    if not path.is_file():
        return [], False
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows, cut = [], False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):
                cut = True
                break
            raise ValueError(f"{path}: line {number} is not JSON ({error.msg})") from None
    return rows, cut


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``metrics.jsonl`` (an absent file reads as no rows; a last line cut
    mid-write is left out).

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl"
        >>> _ = path.write_text('{"step": 1, "loss": 2.0}\\n{"step": 2, "lo')
        >>> read_metrics(path)
        [{'step': 1, 'loss': 2.0}]
    """
    return _parse_metrics(Path(path))[0]


def truncate_metrics(path: str | os.PathLike, last_step: int) -> bool:
    """Drop rows logged after ``last_step`` (a run killed after its last checkpoint logged
    steps that the resumed run logs again) and a last line cut mid-write; returns whether
    there was such a line (repaired)."""
    path = Path(path)
    rows, cut = _parse_metrics(path)
    rows = [row for row in rows if row.get("step", 0) <= last_step]
    with atomic_write(path) as file:
        file.writelines(json.dumps(row) + "\n" for row in rows)
    return cut


@dataclass
class LoopState:
    """Where the training loop stands: everything a resumed run needs besides the model,
    optimiser, scheduler, scaler, sampler and random streams.

    Saved in every checkpoint under ``"trainer"`` (plus ``step``/``epoch`` at the top, which
    other readers use), so a run resumed at its last step returns the same result as the
    uninterrupted one, ``train_loss`` and the last evaluation included.

    Example:
        >>> loop = LoopState(step=3, train_loss=0.5, last_evaluation={"loss": 0.7})
        >>> restored = LoopState()
        >>> restored.load_state_dict(loop.state_dict())
        >>> restored == loop
        True
    """

    step: int = 0
    epoch: int = 0
    batches_consumed: int = 0  # batches of the current epoch used by completed steps
    nonfinite_total: int = 0
    consecutive_nonfinite: int = 0
    best_value: float | None = None
    best_step: int = 0
    bad_evaluations: int = 0
    train_loss: float | None = None  # mean loss of the last logged window
    last_evaluation: dict[str, float] = field(default_factory=dict)
    # per rank, the sums of the log window in progress ({"steps", "loss", "grad_norm",
    # "metrics"}), so a window cut by a resume logs the same means as an uninterrupted one
    windows: list[dict] = field(default_factory=list)

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict`; keys a checkpoint lacks keep their defaults
        (checkpoints written before a field existed), unknown keys are ignored."""
        defaults = LoopState()
        for item in dataclasses.fields(self):
            value = state.get(item.name, getattr(defaults, item.name))
            if item.name == "last_evaluation":
                value = {str(key): float(number) for key, number in dict(value).items()}
            elif item.name == "windows":
                value = [window_sums(window) for window in list(value)]
            elif item.name in ("best_value", "train_loss"):
                value = None if value is None else float(value)
            else:
                value = int(value)
            setattr(self, item.name, value)


def window_sums(window: dict) -> dict:
    """The checkpointable part of a log window: step count and float sums."""
    return {
        "steps": int(window["steps"]),
        "loss": float(window["loss"]),
        "grad_norm": float(window["grad_norm"]),
        "metrics": {str(key): float(value) for key, value in dict(window["metrics"]).items()},
    }


def new_window() -> dict:
    """An empty log window: the sums of the steps since the last logged row."""
    return {
        "steps": 0,
        "loss": 0.0,
        "grad_norm": 0.0,
        "metrics": {},
        "utterances": 0,
        "audio_seconds": 0.0,
        "start": time.perf_counter(),
    }


def window_means(window: dict) -> dict:
    """``{"loss", "grad_norm", metric...}``: the window's means per updated step (empty when
    no step of the window updated)."""
    steps = window["steps"]
    if not steps:
        return {}
    means = {"loss": window["loss"] / steps, "grad_norm": window["grad_norm"] / steps}
    means.update({key: value / steps for key, value in window["metrics"].items()})
    return means


class ProgressWriter:
    """Writes each logged row to metrics.jsonl, TensorBoard (``<split>/<key>``) and the bar.

    Args:
        run_dir: the run directory; writes ``metrics.jsonl`` and ``tb/`` there.
        total_steps: length of the progress bar.
        initial_step: where a resumed run starts (bar position; TensorBoard events after
            it from the interrupted run are purged).
        enabled: False on ranks other than 0: nothing is written.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        total_steps: int,
        initial_step: int = 0,
        enabled: bool = True,
        tensorboard: bool = True,
        show_bar: bool = True,
    ) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.bar = None
        self.tensorboard = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        repaired = False
        if initial_step > 0 and self.metrics_path.exists():
            repaired = truncate_metrics(self.metrics_path, initial_step)
        self._file = open(self.metrics_path, "a", encoding="utf-8")  # noqa: SIM115 (open for the run)
        if tensorboard:
            # imported here: tensorboard takes a second to import and is only needed on rank 0
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(
                str(self.run_dir / "tb"), purge_step=initial_step + 1 if initial_step else None
            )
        if show_bar:
            self.bar = progress_bar(
                total=total_steps, initial=initial_step, desc="train", unit="step"
            )
        if repaired:
            self.message(f"{self.metrics_path}: dropped its last line, cut mid-write")

    def advance(self, steps: int = 1) -> None:
        """Move the bar by ``steps`` optimiser steps."""
        if self.bar is not None:
            self.bar.update(steps)

    def log(self, row: dict) -> None:
        """Record one row ``{"step", "split", name: number, ...}``."""
        if not self.enabled:
            return
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        split, step = row.get("split", "train"), row["step"]
        numbers = {
            key: value
            for key, value in row.items()
            if key not in ("step", "split")
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
        }
        if self.tensorboard is not None:
            for key, value in numbers.items():
                self.tensorboard.add_scalar(f"{split}/{key}", value, step)
        if split == "train" and self.bar is not None:
            shown = {
                key: fmt.format(numbers[key]) for key, fmt in _BAR_KEYS.items() if key in numbers
            }
            self.bar.set_postfix(shown, refresh=False)
        elif split != "train":
            self.message(
                f"step {step} {split}: " + ", ".join(f"{k}={v:.4g}" for k, v in numbers.items())
            )

    def message(self, text: str, warning: bool = False) -> None:
        """A line above the bar (and in the ``speechssl.train`` logger)."""
        if not self.enabled:
            return
        if warning:
            logger.warning(text)
        else:
            logger.info(text)
        if self.bar is not None and not warning:
            self.bar.write(text)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        self._file.close()
