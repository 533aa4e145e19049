"""One progress bar for every loop: animated on a terminal, plain lines in a log file.

A tqdm bar redraws itself with carriage returns several times a second. On a terminal that
is what one wants; redirected into a file or a pipe (``python run.py > train.log``, a job
scheduler's log) it leaves thousands of ``\\r``-joined frames on one line. So
:func:`progress_bar` draws the usual bar when the stream is a terminal (or a notebook), and
otherwise writes one plain line (no ``\\r``, no bar glyphs) at most every ``interval``
seconds, starting once ``interval`` seconds have passed, plus the last state of a bar that
was shown. A task shorter than ``interval`` writes nothing, so a command that fails on bad
input after a moment still ends with its one error line alone.

Every progress display of the library goes through here (the Trainer's bar, k-means
labelling, corpus preparation, feature encoding, probe fitting, each evaluation cell),
so one place decides how progress reads in a log. The interval of a log is
``SPEECHSSL_PROGRESS_INTERVAL`` seconds where that is set (e.g. ``5`` for a short job's
log), else :data:`DEFAULT_LOG_INTERVAL`.

Example:
    >>> import io
    >>> log = io.StringIO()  # not a terminal
    >>> for _ in progress_bar(range(1000), desc="work", stream=log, interval=60):
    ...     pass
    >>> log.getvalue()  # done within the interval: nothing to report
    ''
    >>> import time
    >>> for _ in progress_bar(range(20), desc="slow", stream=log, interval=0.05):
    ...     time.sleep(0.01)
    >>> lines = log.getvalue().splitlines()
    >>> "\\r" in log.getvalue(), "20/20" in lines[-1]
    (False, True)
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterable
from typing import IO

import tqdm
import tqdm.auto

__all__ = [
    "DEFAULT_LOG_INTERVAL",
    "INTERVAL_VARIABLE",
    "LineStream",
    "is_interactive",
    "log_interval",
    "progress_bar",
]

# seconds between two progress lines in a log file: a 1-hour run logs ~120 lines
DEFAULT_LOG_INTERVAL = 30.0
# the environment variable that sets it (seconds, > 0)
INTERVAL_VARIABLE = "SPEECHSSL_PROGRESS_INTERVAL"

# cursor movements tqdm writes for nested bars (position > 0): meaningless in a file
_CURSOR_MOVES = re.compile(r"\x1b\[[0-9]*[A-Za-z]")


def log_interval() -> float:
    """Seconds between progress lines in a log: ``$SPEECHSSL_PROGRESS_INTERVAL`` or 30.

    Raises:
        ValueError: the variable is set to something other than a positive number.
    """
    text = os.environ.get(INTERVAL_VARIABLE, "").strip()
    if not text:
        return DEFAULT_LOG_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{INTERVAL_VARIABLE} must be a positive number of seconds, got {text!r}")
    return value


def is_interactive(stream: IO) -> bool:
    """True when ``stream`` is a terminal, or the process runs in a Jupyter kernel."""
    if "ipykernel" in sys.modules:
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class LineStream:
    """A file-like wrapper that turns tqdm's ``\\r``-redrawn frames into whole lines.

    Each frame (text between carriage returns / newlines) that is not blank becomes one
    line ending in ``\\n``; a frame equal to the previous line (the redraw tqdm does after
    printing a message) is dropped, and so are cursor movements.
    """

    def __init__(self, stream: IO) -> None:
        self.stream = stream
        self.last_line: str | None = None

    def write(self, text: str) -> int:
        for frame in re.split(r"[\r\n]", _CURSOR_MOVES.sub("", text)):
            line = frame.rstrip()
            if line and line != self.last_line:
                self.stream.write(line + "\n")
                self.last_line = line
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


class _LogBar(tqdm.tqdm):
    """tqdm for a log: whatever asks for a redraw (an update, tqdm's monitor thread, a
    message written above the bar), a line goes out at most every ``mininterval`` seconds;
    closing still writes the final state."""

    _closing = False
    _last_line: float | None = None

    def display(self, msg=None, pos=None):
        if msg is None and not self._closing:
            now = time.monotonic()
            if self._time() - self.start_t < self.delay:
                return True  # nothing before the first interval, whoever asks
            if self._last_line is not None and now - self._last_line < self.mininterval:
                return True
            self._last_line = now
        return super().display(msg, pos)

    def close(self) -> None:
        self._closing = True
        super().close()


def progress_bar(
    iterable: Iterable | None = None,
    *,
    desc: str = "",
    total: float | None = None,
    unit: str = "it",
    disable: bool = False,
    leave: bool = True,
    stream: IO | None = None,
    interval: float | None = None,
    **tqdm_options,
) -> tqdm.tqdm:
    """A tqdm bar over ``iterable`` (or updated by hand) on ``stream`` (default stderr).

    Args:
        iterable, desc, total, unit, disable, leave: as tqdm's.
        stream: where progress goes; a terminal gets the animated bar.
        interval: seconds between progress lines when ``stream`` is not a terminal
            (default :func:`log_interval`).
        tqdm_options: more tqdm keywords (``initial``, ``unit_scale``, ...).
    """
    stream = sys.stderr if stream is None else stream
    interval = log_interval() if interval is None else interval
    options = {"desc": desc, "total": total, "unit": unit, "disable": disable, "leave": leave}
    if is_interactive(stream):
        return tqdm.auto.tqdm(iterable, file=stream, dynamic_ncols=True, **options, **tqdm_options)
    if total is None and iterable is not None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    prefix = "{desc}: " if desc else ""
    # no bar glyphs in a log: the counts, the rate and the postfix (loss, lr) only
    bar_format = (
        prefix
        + "{percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
        if total
        else prefix + "{n_fmt} [{elapsed}, {rate_fmt}{postfix}]"
    )
    options["total"] = total
    return _LogBar(
        iterable,
        file=LineStream(stream),
        mininterval=interval,
        # the monitor thread forces a redraw after maxinterval: never more often than interval
        maxinterval=max(interval, 10.0),
        # nothing before the first interval: a short task (or one failing at once) stays quiet
        delay=interval,
        bar_format=bar_format,
        **options,
        **tqdm_options,
    )
