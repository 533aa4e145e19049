"""Progress output: an animated bar on a terminal, bounded plain lines in a log file."""

from __future__ import annotations

import io
import time

from speechssl.progress_bar import LineStream, progress_bar
from speechssl.train.progress import ProgressWriter


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_stream_gets_bounded_plain_lines():
    log = io.StringIO()
    interval, seconds = 0.1, 0.6
    start = time.perf_counter()
    for _ in progress_bar(range(300), desc="work", stream=log, interval=interval):
        time.sleep(seconds / 300)
    elapsed = time.perf_counter() - start
    text = log.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and "\x1b" not in text
    # nothing before the first interval, then one line per interval at most, and the final state
    assert 1 <= len(lines) <= elapsed / interval + 3
    assert not lines[0].startswith("work:   0%")
    assert lines[-1].startswith("work: 100% 300/300")
    assert all(line.startswith("work:") for line in lines)


def test_a_task_shorter_than_the_interval_writes_nothing():
    log = io.StringIO()
    with progress_bar(total=100_000, desc="fast", stream=log, interval=60) as bar:
        for _ in range(100_000):
            bar.update(1)
    assert log.getvalue() == ""  # a failing command's one error line stays alone


def test_messages_between_updates_stay_whole_lines():
    log = io.StringIO()
    with progress_bar(total=3, desc="steps", stream=log, interval=60) as bar:
        bar.update(1)
        bar.write("step 1 valid: loss=2", file=bar.fp)
        bar.update(2)
    lines = log.getvalue().splitlines()
    assert "step 1 valid: loss=2" in lines
    assert "\r" not in log.getvalue()


def test_terminal_gets_the_animated_bar():
    terminal = _Terminal()
    for _ in progress_bar(range(5), desc="tty", stream=terminal, interval=60, mininterval=0):
        pass
    assert "\r" in terminal.getvalue()  # redrawn in place


def test_line_stream_drops_cursor_moves_and_repeated_frames():
    log = io.StringIO()
    stream = LineStream(log)
    stream.write("\rframe 1   \x1b[A")
    stream.write("\rframe 1")
    stream.write("\rframe 2\n")
    assert log.getvalue() == "frame 1\nframe 2\n"


def test_progress_writer_bar_into_a_file_is_plain(tmp_path, capsys):
    writer = ProgressWriter(tmp_path, total_steps=2000, tensorboard=False, show_bar=True)
    for step in range(1, 2001):
        writer.advance()
        if step % 100 == 0:
            writer.log({"step": step, "split": "train", "loss": 1.0 / step, "lr": 1e-3})
    writer.log({"step": 2000, "split": "valid", "loss": 0.5})
    writer.close()
    captured = capsys.readouterr()  # pytest's capture is not a terminal
    assert "\r" not in captured.err + captured.out
    # the bar's lines (logging handlers that earlier tests left may add lines of their own)
    lines = [line for line in captured.err.splitlines() if line.startswith("train:")]
    assert len(lines) <= 2  # under 30 s: none; a slow machine: one, and the last state
    if lines:
        assert lines[-1].startswith("train: 100% 2000/2000") and "loss=" in lines[-1]
    assert "step 2000 valid: loss=0.5" in captured.out.splitlines()


def test_a_log_gets_a_line_at_most_every_interval_whatever_asks_for_redraws():
    """Redraws asked for by hand (as tqdm's monitor thread and messages above the bar do)
    do not add lines: at most one per interval, plus the final state."""
    log = io.StringIO()
    interval, start = 0.2, time.monotonic()
    bar = progress_bar(total=40, desc="work", stream=log, interval=interval)
    for _ in range(40):
        time.sleep(0.02)
        bar.update()
        bar.refresh()
    bar.close()
    elapsed = time.monotonic() - start
    lines = log.getvalue().splitlines()
    assert 1 <= len(lines) <= elapsed / interval + 1, lines
    assert "40/40" in lines[-1]
