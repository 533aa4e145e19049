"""The one error boundary of every entry point (``speechssl`` CLI, each recipe).

Expected failures — bad input, not bugs — end the process with one stderr line
``<program>: error: <message>`` (under 300 characters) and exit code 1:

- ``ValueError`` (bad option values, layouts, audio, unreadable or refused checkpoints,
  weights that do not fit: :mod:`speechssl.safe_io` raises these);
- ``OSError`` (missing files, permissions, a file where a folder should be), with a plain
  ``disk full at PATH`` for ``ENOSPC``;
- ``pickle.UnpicklingError`` and safetensors' ``SafetensorError`` (damaged weight files);
- torch's ``enforce fail at inline_container.cc`` write failure (a full disk in disguise);
- a diverging training run (:class:`speechssl.train.NonFiniteLossError`: the step, where the
  last good weights are, and what to change).
- an allocation that does not fit (``DefaultCPUAllocator: can't allocate memory``, CUDA's
  ``OutOfMemoryError``): one line naming the size asked for.

Everything else is a bug and keeps its traceback: there is no catch-all.

A recipe's door checks every config value (ranges, and types where no dataclass holds
them) and the recipe's own options (its ``door(cfg) -> problems``: seeds, modes, source
folders) before any work, one line per bad value; it locks ``run_dir`` against a second
run and claims it (:func:`speechssl.safe_io.claim_output_folder`): a folder that holds
another recipe's run, or files of unknown origin, is refused unless ``force=true``.
:func:`run_hydra_main` runs these checks right after composing the command line, before
Hydra starts (and creates ``run_dir``), and makes Hydra's own refusals one line too;
:class:`RecipeDoor` (a Hydra callback, before Hydra writes into ``run_dir``) and
:func:`run_recipe` (around the recipe's function) repeat them for every other caller.

Example:
    >>> one_line(OSError(28, "No space left on device", "/runs/a/step_1.pt"))
    'disk full at /runs/a/step_1.pt'
    >>> one_line(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 4000000000000 bytes."))
    'out of memory: an allocation of 4.0 TB was asked for (a size option too large?)'
    >>> one_line(KeyError("bug")) is None
    True
"""

from __future__ import annotations

import errno
import functools
import os
import pickle
import re
import sys
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError

from speechssl.config import check_types, check_values, compose
from speechssl.encoders import build_encoder
from speechssl.safe_io import (
    RunLock,
    check_allocation,
    claim_output_folder,
    format_bytes,
    short_reason,
)
from speechssl.train.trainer import NonFiniteLossError
from speechssl.typed import to_plain

__all__ = [
    "MAX_LINE",
    "RecipeDoor",
    "check_source_folders",
    "exit_on_bad_input",
    "one_line",
    "run_hydra_main",
    "run_recipe",
    "source_folder_problems",
]

Result = TypeVar("Result")
# an encoder option above this (embed_dim, ff_dim, ...) is beyond every preset's: its
# encoder is built on the meta device at the door to see whether its weights fit
_LARGEST_PLAIN_SIZE = 65536
# a recipe's own checks of its options: one line per problem, nothing when all is well
Door = Callable[[object], list[str]]

# one stderr line stays readable on a terminal and in a log: shorter than this
MAX_LINE = 300


def _clip(text: str, budget: int) -> str:
    text = " ".join(text.split())  # one line, whatever the message held
    # never pass on torch's advice to retry with weights_only=False: it would run code
    text = text.split(" If you fully trust the source")[0].split("(1) In PyTorch 2.6")[0]
    if len(text) <= budget:
        return text
    # keep the start (what and where) and the end (often the verdict), cut the middle
    # (typically a long list of options or keys)
    head = (budget - 5) * 3 // 5
    tail = budget - 5 - head
    return f"{text[:head]} ... {text[-tail:]}"


def one_line(error: BaseException) -> str | None:
    """The one-line message of an expected failure, or None for a bug (keep its traceback)."""
    if isinstance(error, OSError):
        where = error.filename or ""
        if error.errno == errno.ENOSPC:
            return f"disk full at {where}" if where else "disk full"
        if error.strerror and where:
            return f"{error.strerror}: {where}"
        return str(error)
    if isinstance(error, (ValueError, pickle.UnpicklingError, SafetensorError, NonFiniteLossError)):
        return str(error) or type(error).__name__
    if isinstance(error, RuntimeError) and (
        "inline_container.cc" in str(error) or "PytorchStreamWriter" in str(error)
    ):
        return f"a file write failed; is the disk full? ({short_reason(error)})"
    if isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "DefaultCPUAllocator" in str(error)
    ):
        return _out_of_memory(str(error))
    return None


def _out_of_memory(message: str) -> str:
    """One line for an allocator's refusal, with the size it was asked for."""
    cpu = re.search(r"allocate (\d+) bytes", message)
    cuda = re.search(r"Tried to allocate ([\d.]+ [KMGT]?i?B)", message)
    if cpu:
        asked = format_bytes(int(cpu.group(1)))
    elif cuda:
        asked = cuda.group(1)
    else:
        return f"out of memory ({short_reason(RuntimeError(message))})"
    return f"out of memory: an allocation of {asked} was asked for (a size option too large?)"


def exit_on_bad_input(program: str, function: Callable[..., Result], *args, **kwargs) -> Result:
    """``function(*args, **kwargs)``; an expected failure ends the process with one line.

    Prints ``<program>: error: <message>`` on stderr and exits with code 1 (130 on Ctrl-C);
    a bug propagates with its traceback.
    """
    try:
        return function(*args, **kwargs)
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        message = one_line(error)
        if message is None:
            raise
        prefix = f"{program}: error: "
        print(prefix + _clip(message, MAX_LINE - 1 - len(prefix)), file=sys.stderr)
        sys.exit(1)


def source_folder_problems(sources: Mapping[str, str | os.PathLike | None]) -> list[str]:
    """One line per option whose folder does not exist (``None`` entries are skipped).

    Example:
        >>> source_folder_problems({"emotion.src": "/no/such/folder", "speaker.src": None})
        ['emotion.src: folder not found: /no/such/folder']
    """
    return [
        f"{option}: folder not found: {path}"
        for option, path in sources.items()
        if path is not None and not os.path.isdir(path)
    ]


def check_source_folders(sources: Mapping[str, str | os.PathLike | None]) -> None:
    """Raise ``ValueError`` naming the first option whose folder does not exist.

    Args:
        sources: option name (as the user types it, e.g. ``"speaker.src"``) -> path;
            ``None`` entries are skipped (a source the run does not use).

    Example:
        >>> check_source_folders({"emotion.src": "."})  # a folder: nothing happens
        >>> check_source_folders({"emotion.src": "/no/such/folder"})
        Traceback (most recent call last):
            ...
        ValueError: emotion.src: folder not found: /no/such/folder
    """
    problems = source_folder_problems(sources)
    if problems:
        raise ValueError(problems[0])


def _is_main_process() -> bool:
    # torchrun's other ranks share rank 0's run_dir: only rank 0 holds its lock
    return int(os.environ.get("RANK", "0") or 0) == 0


class RecipeDoor(Callback):
    """Hydra callback of every recipe: the door's checks before Hydra writes into ``run_dir``.

    Hydra saves ``.hydra/config.yaml`` and opens the job log in the run folder before the
    recipe's function starts; a run with a bad value or on a folder another run holds
    would overwrite the first run's records there. Registered in each recipe's config as
    ``hydra.callbacks.door._target_: speechssl.errors.RecipeDoor``; :func:`run_recipe`
    repeats the checks for callers that compose without Hydra's runner (tests, notebooks).
    """

    def __init__(self) -> None:
        self.lock: RunLock | None = None

    def on_run_start(self, config, config_name: str | None = None, **kwargs) -> None:
        program = config_name or "recipe"
        user = OmegaConf.masked_copy(config, [key for key in config if key != "hydra"])
        _exit_on_bad_values(
            program, _experiment_problems(program, config) + _problems(program, user)
        )
        if "run_dir" in user and _is_main_process():
            self.lock = RunLock(user.run_dir)
            exit_on_bad_input(program, self.lock.acquire)
            # before Hydra writes its files (run.log) into the folder
            exit_on_bad_input(program, _claim_run_dir, program, user)

    def on_run_end(self, config, **kwargs) -> None:
        if self.lock is not None:
            self.lock.release()


def _claim_run_dir(program: str, cfg) -> None:
    """``cfg.run_dir`` for this recipe's outputs: new, empty, its own earlier run, or forced."""
    force = bool(cfg.get("force", False))
    claim_output_folder(cfg.run_dir, program, force=force, force_hint="force=true")


@functools.lru_cache(maxsize=8)
def _defaults(program: str):
    """The recipe's composed defaults (composed once per process: a second or two each)."""
    return compose(program)


def _experiment_problems(program: str, config) -> list[str]:
    """``experiment=<name>`` must be a preset of this recipe (``conf/experiment/<recipe>_*``):
    another recipe's would add its sections here unnoticed."""
    experiment = OmegaConf.select(config, "hydra.runtime.choices.experiment", default=None)
    if experiment is None or str(experiment).startswith(f"{program}_"):
        return []
    return [f"experiment={experiment}: a preset of another recipe; {program}'s are {program}_*"]


def _problems(program: str, cfg, door: Door | None = None) -> list[str]:
    """Out-of-range values, values whose type differs from the recipe's defaults, an empty
    ``run_dir``, then the recipe's own checks (``door``)."""
    problems = check_values(cfg)
    if "run_dir" in cfg and not str(cfg.run_dir or "").strip():
        # Hydra would write the run into the current folder
        problems.append("run_dir: empty; name the folder the run writes to")
    try:
        problems += check_types(cfg, _defaults(program))
    except ValueError:
        pass  # not a recipe's top config (a custom one): ranges only
    if not problems:
        problems += _encoder_size_problems(cfg)
    if door is not None and not problems:
        problems += door(cfg)  # its options are read only once their types are right
    return problems


def _integers(node):
    """Every integer (not bool) in plain dicts and lists."""
    if isinstance(node, dict):
        node = list(node.values())
    if isinstance(node, (list, tuple)):
        for item in node:
            yield from _integers(item)
    elif isinstance(node, int) and not isinstance(node, bool):
        yield node


def _encoder_size_problems(cfg) -> list[str]:
    """The encoder built on the meta device (no memory): its weights must fit this machine
    (``encoder.embed_dim=1000000000`` is one line before any data preparation)."""
    if not isinstance(cfg.get("encoder"), (dict, DictConfig)):
        return []
    # building even on the meta device costs seconds (torch imports its compiler for the
    # filterbank's ops): only a config with a size beyond any preset's is built
    if not any(value > _LARGEST_PLAIN_SIZE for value in _integers(to_plain(cfg.encoder))):
        return []
    try:
        with torch.device("meta"):
            parameters = sum(p.numel() for p in build_encoder(cfg.encoder).parameters())
    except Exception:  # noqa: BLE001 - a config the builder refuses fails, in one line, where it is used
        return []
    try:
        check_allocation(parameters * 4, f"encoder: {parameters:,} float32 parameters")
    except ValueError as error:
        return [str(error)]
    return []


def _exit_on_bad_values(program: str, problems: list[str]) -> None:
    """Print each problem as ``<program>: error: <problem>`` and exit 1 (nothing if none)."""
    if problems:
        prefix = f"{program}: error: "
        for problem in problems:
            print(prefix + _clip(problem, MAX_LINE - 1 - len(prefix)), file=sys.stderr)
        sys.exit(1)


def run_hydra_main(program: str, main: Callable[[], object], door: Door | None = None) -> None:
    """A recipe's ``__main__``: ``main()`` (its ``@hydra.main``), after composing the
    command line's overrides once, so that Hydra's own refusals (an unknown key, a value of
    the wrong type, a missing config option) are one line too instead of Hydra's report,
    and every value, source folder and option the recipe's ``door`` checks is refused
    before Hydra starts or creates ``run_dir``.

    Command lines with flags (``--help``, ``--cfg job``, ``-m``) go to Hydra unchecked.
    """
    overrides = sys.argv[1:]
    if not any(argument.startswith("-") for argument in overrides):
        # Hydra's own settings (hydra.run.dir=...) are not part of the recipe's config
        plain = [arg for arg in overrides if not arg.lstrip("+~").startswith("hydra")]
        try:
            cfg = compose(program, plain)
        except ValueError as error:
            reason = str(error).split("]: ", 1)[-1]  # without the echoed override list
            prefix = f"{program}: error: "
            print(prefix + _clip(reason, MAX_LINE - 1 - len(prefix)), file=sys.stderr)
            sys.exit(1)
        _exit_on_bad_values(program, _problems(program, cfg, door))
    main()


def run_recipe(program: str, function: Callable, cfg, door: Door | None = None) -> None:
    """A recipe's door: check every config value and the recipe's own options (``door``),
    lock and claim ``cfg.run_dir``, run ``function(cfg)``.

    Bad values are printed one a line (``<program>: error: head.projector_dim=-1: must be
    >= 1``) before any work, with exit code 1; a second run on the same ``run_dir`` stops
    with one line naming the first run's pid, and a folder holding another recipe's run or
    other files with one line (unless ``force=true``). Then :func:`exit_on_bad_input` runs
    it.
    """
    _exit_on_bad_values(program, _problems(program, cfg, door))
    lock = RunLock(cfg.run_dir)
    if _is_main_process():
        exit_on_bad_input(program, lock.acquire)
    try:
        if _is_main_process():
            exit_on_bad_input(program, _claim_run_dir, program, cfg)
        exit_on_bad_input(program, function, cfg)
    finally:
        lock.release()
