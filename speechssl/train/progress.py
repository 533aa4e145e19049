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

import json
import logging
import os
from pathlib import Path

from speechssl.progress_bar import progress_bar
from speechssl.safe_io import atomic_write

__all__ = ["ProgressWriter", "read_metrics", "truncate_metrics"]

logger = logging.getLogger("speechssl.train")

# Keys shown in the progress bar, in this order, with their format.
_BAR_KEYS = {
    "loss": "{:.4g}",
    "lr": "{:.2e}",
    "utterances_per_s": "{:.1f}",
    "audio_s_per_s": "{:.0f}",
}


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``metrics.jsonl`` (an absent file reads as no rows)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]


def truncate_metrics(path: str | os.PathLike, last_step: int) -> None:
    """Drop rows logged after ``last_step`` (a run killed after its last checkpoint logged
    steps that the resumed run logs again)."""
    path = Path(path)
    rows = [row for row in read_metrics(path) if row.get("step", 0) <= last_step]
    with atomic_write(path) as file:
        file.writelines(json.dumps(row) + "\n" for row in rows)


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
        if initial_step > 0 and self.metrics_path.exists():
            truncate_metrics(self.metrics_path, initial_step)
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
