"""The ground floor every other module writes and reads files through.

- :func:`atomic_write` / :func:`atomic_path` / :func:`write_text_atomic` /
  :func:`save_torch_atomic`: write to a hidden temporary file of this process beside the
  target, then rename over it, so a reader (or a resumed run after a kill) sees the old
  file or the whole new one, never half a file.
  A full disk surfaces as ``OSError(ENOSPC)`` naming the final path, also where torch only
  says ``enforce fail at inline_container.cc``.
- :func:`remove_orphaned_temporaries`: the temporary files a killed writer left behind.
- :func:`load_torch_file`: ``torch.load(weights_only=True)`` with one-line errors that name
  the file and what was found in it (empty, text, a pickle asking for a class, random bytes).
  It never suggests ``weights_only=False``: that would run code from the file.
- :func:`check_state_fits` / :func:`load_state_strict`: strict state loading whose errors
  are one short line (missing, unexpected and wrongly shaped entries), checked before the
  module is touched, so a refused state leaves the module as it was.
- :class:`RunLock`: an ``flock``'d ``.lock`` file holding the owner's pid; a second run on
  the same folder stops with one line naming that pid, and a lock whose owner died is free.
- :func:`claim_output_folder`: a folder holds the outputs of one kind of writer (an export,
  an evaluation, a recipe's run); another writer's folder, or a non-empty folder of unknown
  origin, is refused unless forced.
- :func:`read_json` / :func:`parse_json`: JSON of bounded size and nesting depth, whose
  every failure is one line (never a ``RecursionError``).
- :func:`files_digest`: the identity of files (path, size, mtime; optionally their first
  and last blocks), what a cache key needs to notice changed audio.

This module imports nothing from speechssl (it is the bottom layer).

Example:
    >>> import tempfile, torch
    >>> folder = tempfile.mkdtemp()
    >>> path = save_torch_atomic({"w": torch.ones(2)}, folder + "/state.pt")
    >>> load_torch_file(path, "state")["w"].tolist()
    [1.0, 1.0]
    >>> _ = write_text_atomic(folder + "/note.txt", "hello")
    >>> load_torch_file(folder + "/note.txt", "state")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    speechssl.safe_io.UnreadableFileError: .../note.txt: not a readable state: a text file (hello)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import os
import pickle
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Self

import torch

__all__ = [
    "OUTPUT_MARKER",
    "RunDirBusyError",
    "RunLock",
    "StateMismatchError",
    "UnreadableFileError",
    "UnsafeFileError",
    "atomic_path",
    "atomic_write",
    "check_allocation",
    "check_state_fits",
    "claim_output_folder",
    "file_identity",
    "files_digest",
    "format_bytes",
    "load_state_strict",
    "load_torch_file",
    "parse_json",
    "physical_memory_bytes",
    "read_json",
    "remove_orphaned_temporaries",
    "save_torch_atomic",
    "short_reason",
    "temporary_path",
    "write_text_atomic",
]

# ``.<name>.tmp<pid>``: the temporary name of every atomic writer
_TEMPORARY = re.compile(r"^\..+\.tmp(\d+)$")
# below this many free bytes a failed write is reported as a full disk
_NEARLY_FULL_BYTES = 64 * 1024 * 1024
# at most this many characters of a library's own message go into ours
_REASON_CHARS = 120


class UnreadableFileError(ValueError):
    """A file that cannot be used (missing parts, wrong format, truncated); one line."""


class UnsafeFileError(UnreadableFileError):
    """A pickle that asks for a class outside the safe types: refused, never run.

    ``global_name`` is the class or function it asked for (``"posix.system"``).
    """

    def __init__(self, message: str, global_name: str = "") -> None:
        super().__init__(message)
        self.global_name = global_name


class StateMismatchError(ValueError):
    """A state dict that does not fit its module (missing, unexpected or reshaped entries)."""


class RunDirBusyError(ValueError):
    """Another living process holds the run folder's lock."""


def short_reason(error: BaseException) -> str:
    """The first line of ``error``'s message, at most 120 characters, never torch's advice to
    load with ``weights_only=False`` (which would run code from the file)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    lines = [line for line in lines if "weights_only" not in line and "Weights only" not in line]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


# ---------------------------------------------------------------------------------------
# writing


def temporary_path(path: str | os.PathLike) -> Path:
    """``folder/.<name>.tmp<pid>``: per process, so two writers never share one."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)  # makes the rename itself durable
    finally:
        os.close(descriptor)


def _torch_write_failure(error: BaseException) -> bool:
    """torch's zip writer reports a failed ``write`` as a RuntimeError from C++."""
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "inline_container.cc" in text or "PytorchStreamWriter" in text
    )


def _write_error(error: BaseException, path: Path, temporary: Path) -> BaseException | None:
    """An ``OSError`` naming ``path`` for a failed write, or None to re-raise ``error``."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return OSError(errno.ENOSPC, "disk full", str(path))
    if _torch_write_failure(error):
        try:
            # measured before the partial temporary file is removed
            full = shutil.disk_usage(path.parent).free < _NEARLY_FULL_BYTES
        except OSError:
            full = False
        if full:
            return OSError(errno.ENOSPC, "disk full", str(path))
        return OSError(errno.EIO, f"write failed ({short_reason(error)})", str(path))
    return None


def _umask() -> int:
    """This process's umask, read without changing it where Linux says it (``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (no threads write files here)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    For writers that take a file name rather than a file object (safetensors'
    ``save_file``); :func:`atomic_write` is this with the file opened.

    Args:
        path: the final file; its folder is created.
        durable: fsync the file and the folder (checkpoints: survive a power cut too).

    On any failure the temporary file is removed and ``path`` keeps its old content; a
    full disk raises ``OSError(ENOSPC, "disk full", path)``.

    Example:
        >>> import tempfile
        >>> path = tempfile.mkdtemp() + "/a.bin"
        >>> with atomic_path(path) as temporary:
        ...     _ = temporary.write_bytes(b"whole")
        >>> open(path, "rb").read()
        b'whole'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        yield temporary
        if durable:
            descriptor = os.open(temporary, os.O_RDONLY)
            try:
                os.fsync(descriptor)  # the data, whichever handle wrote it
            finally:
                os.close(descriptor)
        # some writers (safetensors) create their file as 0600: an output follows the umask
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException as error:
        replacement = _write_error(error, path, temporary)
        temporary.unlink(missing_ok=True)
        if replacement is not None:
            raise replacement from None
        raise
    if durable:
        _fsync_folder(path.parent)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "w", durable: bool = False, encoding: str = "utf-8"
) -> Iterator:
    """Open a temporary file for writing; on success rename it over ``path``.

    Args:
        path: the final file; its folder is created.
        mode: ``"w"`` (text, ``encoding``) or ``"wb"``.
        durable: fsync the file and the folder (checkpoints: survive a power cut too).

    On any failure the temporary file is removed and ``path`` keeps its old content; a
    full disk raises ``OSError(ENOSPC, "disk full", path)``.

    Example:
        >>> import tempfile
        >>> path = tempfile.mkdtemp() + "/a.txt"
        >>> with atomic_write(path) as file:
        ...     _ = file.write("whole")
        >>> open(path).read()
        'whole'
    """
    with (
        atomic_path(path, durable=durable) as temporary,
        open(temporary, mode, encoding=None if "b" in mode else encoding) as file,
    ):
        yield file


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``.

    Example:
        >>> import tempfile
        >>> write_text_atomic(tempfile.mkdtemp() + "/a/stamp.json", "{}").read_text()
        '{}'
    """
    with atomic_write(path) as file:
        file.write(text)
    return Path(path)


def save_torch_atomic(value, path: str | os.PathLike, durable: bool = True) -> Path:
    """``torch.save(value)`` to ``path`` atomically (fsynced by default); returns ``path``."""
    with atomic_write(path, "wb", durable=durable) as file:
        torch.save(value, file)
    return Path(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def remove_orphaned_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.tmp<pid>`` files in ``folder`` whose writing process is gone.

    A killed writer leaves its temporary file behind (a checkpoint's can be gigabytes);
    a file whose pid is alive may still be written and is kept. Returns the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        match = _TEMPORARY.match(entry.name)
        if not match or not entry.is_file() or _alive(int(match.group(1))):
            continue
        entry.unlink(missing_ok=True)
        removed.append(entry)
    return sorted(removed)


# ---------------------------------------------------------------------------------------
# reading


def _found(path: Path) -> str:
    """What the first bytes of ``path`` look like, in a few words."""
    try:
        with open(path, "rb") as file:
            head = file.read(64)
        size = path.stat().st_size
    except OSError as error:
        return short_reason(error)
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        return f"a truncated or corrupt torch file ({size} bytes)"
    if head[:1] == b"\x80":
        return f"a pickle of {size} bytes that is not a torch file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"{size} bytes of unknown data"
    first = text.strip().splitlines()[0][:40] if text.strip() else ""
    return f"a text file ({first})"


def load_torch_file(
    path: str | os.PathLike,
    what: str = "checkpoint",
    map_location: str | torch.device = "cpu",
    allowed_globals: list | tuple = (),
):
    """``torch.load(path, weights_only=True)`` whose every failure is one line.

    Args:
        path: the file.
        what: what the file should be ("checkpoint", "k-means file"), for the messages.
        map_location: as for ``torch.load``.
        allowed_globals: classes the weights-only unpickler may also rebuild (fairseq's
            config objects); anything else is still refused.

    Raises:
        FileNotFoundError: no file at ``path``.
        UnsafeFileError: a pickle asking for a class outside the safe types (not run).
        UnreadableFileError: empty, text, truncated or random bytes; the message says which.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, f"{what} not found", str(path))
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        match = re.search(r"GLOBAL ([\w.]+)", str(error))
        if match:
            raise UnsafeFileError(
                f"{path}: refused to load the {what}: it asks for {match.group(1)}, "
                "which only code could rebuild (a checkpoint holds tensors, numbers and strings)",
                match.group(1),
            ) from None
        raise UnreadableFileError(f"{path}: not a readable {what}: {_found(path)}") from None
    except OSError as error:
        raise UnreadableFileError(
            f"{path}: cannot read the {what}: {short_reason(error)}"
        ) from None
    except Exception:  # noqa: BLE001 - torch's parser of arbitrary bytes raises any type
        # (RuntimeError, EOFError, IndexError, KeyError, TypeError, struct.error, ...):
        # each means the bytes are not a torch file, and the first bytes say what they are
        raise UnreadableFileError(f"{path}: not a readable {what}: {_found(path)}") from None


# at most this many bytes and this nesting depth of a JSON file anyone may hand us (a config,
# a model.json, a manifest line): a run's own files are far smaller and flatter
MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_JSON_DEPTH = 64


def _depth_beyond(value, limit: int) -> bool:
    """Whether ``value`` (parsed JSON) nests deeper than ``limit`` (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return False


def parse_json(text: str, source: str = "JSON", max_depth: int = MAX_JSON_DEPTH):
    """``json.loads(text)`` whose failures are one ``ValueError`` naming ``source``.

    Nesting deeper than ``max_depth`` is refused (Python's parser would otherwise raise a
    ``RecursionError`` at about 1,000 levels, or accept a structure no config has).

    Example:
        >>> parse_json('{"a": [1, 2]}')
        {'a': [1, 2]}
        >>> parse_json("[" * 5000 + "]" * 5000, "config.json")
        Traceback (most recent call last):
            ...
        ValueError: config.json: not usable JSON (nested deeper than 64 levels)
    """
    try:
        value = json.loads(text)
    except RecursionError:
        value, deep = None, True
    except json.JSONDecodeError as error:
        raise ValueError(f"{source}: not valid JSON ({short_reason(error)})") from None
    else:
        deep = _depth_beyond(value, max_depth)
    if deep:
        raise ValueError(f"{source}: not usable JSON (nested deeper than {max_depth} levels)")
    return value


def read_json(path: str | os.PathLike, what: str = "file", max_bytes: int = MAX_JSON_BYTES):
    """The parsed JSON of ``path``: at most ``max_bytes``, UTF-8, nested at most
    :data:`MAX_JSON_DEPTH` levels; every failure one line naming the file.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: too large, not UTF-8, not JSON, or nested too deep.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, f"{what} not found", str(path))
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(
            f"{path}: {size:,} bytes is too large for a {what} (at most {max_bytes:,})"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a UTF-8 text {what} ({short_reason(error)})") from None
    return parse_json(text, str(path))


# ---------------------------------------------------------------------------------------
# file identity


# bytes read at each end of a file for its content digest
IDENTITY_BLOCK = 65536


def file_identity(path: str | os.PathLike, content: bool = False) -> str:
    """What a cache keyed on a file must change with: ``"<size>:<mtime_ns>"``, and with
    ``content`` also ``":<digest>"`` (SHA-1) of its first and last :data:`IDENTITY_BLOCK`
    bytes, so a clip replaced by another of the same length changes it even where the copy
    kept the old mtime. A missing file is ``"missing"``; the digest of each (path, size,
    mtime, ctime) is read once per process.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "a.bin")
        >>> _ = open(path, "wb").write(b"x" * 10)
        >>> before = file_identity(path, content=True)
        >>> stat = os.stat(path)
        >>> _ = open(path, "wb").write(b"y" * 10)
        >>> os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime
        >>> after = file_identity(path, content=True)
        >>> size = file_identity(path).split(":")[0]
        >>> size, before.rsplit(":", 1)[0] == after.rsplit(":", 1)[0], before == after
        ('10', True, False)
    """
    path = os.fspath(path)
    try:
        stat = os.stat(path)
    except OSError:
        return "missing"
    identity = f"{stat.st_size}:{stat.st_mtime_ns}"
    if not content:
        return identity
    try:
        digest = _ends_digest(path, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    except OSError:
        return identity + ":unreadable"
    return f"{identity}:{digest}"


@functools.lru_cache(maxsize=1 << 20)
def _ends_digest(path: str, size: int, mtime_ns: int, ctime_ns: int) -> str:
    # size, mtime and ctime are part of the cache key: a rewritten file is read again
    digest = hashlib.sha1()
    with open(path, "rb") as file:
        digest.update(file.read(IDENTITY_BLOCK))
        if size > IDENTITY_BLOCK:
            file.seek(max(IDENTITY_BLOCK, size - IDENTITY_BLOCK))
            digest.update(file.read(IDENTITY_BLOCK))
    return digest.hexdigest()[:16]


def files_digest(paths, content: bool = False) -> str:
    """Hex digest of every path (in the given order) and its :func:`file_identity`."""
    digest = hashlib.sha1()
    for path in paths:
        digest.update(f"{os.fspath(path)}\t{file_identity(path, content)}\n".encode())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# memory


def physical_memory_bytes() -> int | None:
    """This machine's RAM in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(count: float) -> str:
    """``4.0 TB``, ``1.5 GB``, ``12 kB``: a size as a person reads it.

    Example:
        >>> format_bytes(4e12), format_bytes(1536e6), format_bytes(999)
        ('4.0 TB', '1.5 GB', '999 B')
    """
    for unit, scale in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{int(count)} B"


def check_allocation(num_bytes: int, what: str) -> None:
    """Refuse, in one line, to allocate more than this machine's RAM: ``what`` would need
    ``num_bytes`` (a model's weights: check on the meta device before building it).

    Raises:
        ValueError: ``"<what> need 4.0 TB of memory; this machine has 24.0 GB"``.
    """
    available = physical_memory_bytes()
    if available is not None and num_bytes > available:
        raise ValueError(
            f"{what} need {format_bytes(num_bytes)} of memory; this machine has "
            f"{format_bytes(available)}"
        )


# ---------------------------------------------------------------------------------------
# output folders

# written into every folder an output writer claims: {"kind": ...}
OUTPUT_MARKER = ".speechssl-output.json"


def claim_output_folder(
    folder: str | os.PathLike,
    kind: str,
    *,
    force: bool = False,
    force_hint: str = "--force",
    reuse: bool = True,
) -> Path:
    """Create ``folder`` for outputs of ``kind`` (``"export"``, ``"evaluate"``, a recipe's
    name), or check that it already holds outputs of that kind; returns the folder.

    A folder with another kind's marker, or non-empty without a marker (files of unknown
    origin), is refused unless ``force`` (the message says how: ``force_hint``); then it is
    claimed for ``kind``. With ``reuse=False`` (a folder holds one export) an earlier output
    of the same kind is refused too. Hidden files a
    run leaves before writing (``.lock``, ``.hydra``) do not make a folder non-empty.

    Raises:
        ValueError: the folder is a file, holds another kind's outputs, or other files.

    Example:
        >>> import tempfile
        >>> folder = claim_output_folder(tempfile.mkdtemp() + "/out", "export")
        >>> claim_output_folder(folder, "evaluate")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        ValueError: .../out holds an export, not evaluate outputs; choose another folder or force (--force)
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder")
    marker = folder / OUTPUT_MARKER
    owner = None
    if marker.is_file():
        try:
            owner = parse_json(marker.read_text(encoding="utf-8"), str(marker)).get("kind")
        except (ValueError, AttributeError, OSError, UnicodeDecodeError):
            owner = "unknown"
    if not reuse and owner == kind and not force:
        raise ValueError(
            f"{folder} already holds {kind} outputs; choose another folder or force ({force_hint})"
        )
    if owner != kind and not force:
        if owner is not None:
            article = "an" if owner[:1] in "aeiou" else "a"
            what = "an export" if owner == "export" else f"{article} {owner} run"
            raise ValueError(
                f"{folder} holds {what}, not {kind} outputs; choose another folder or force "
                f"({force_hint})"
            )
        others = (
            sorted(
                entry.name
                for entry in folder.iterdir()
                if not entry.name.startswith(".") or entry.name == OUTPUT_MARKER
            )
            if folder.is_dir()
            else []
        )
        if others:
            shown = ", ".join(others[:3]) + (" ..." if len(others) > 3 else "")
            raise ValueError(
                f"{folder} is not empty ({shown}) and was not written by {kind}; choose an "
                f"empty folder or force ({force_hint})"
            )
    folder.mkdir(parents=True, exist_ok=True)
    if owner != kind:
        write_text_atomic(marker, json.dumps({"kind": kind}) + "\n")
    return folder


# ---------------------------------------------------------------------------------------
# state dicts


def _listed(names: list[str], limit: int) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_state_fits(
    module: torch.nn.Module,
    state,
    source: str = "",
    prefix: str = "",
    strict: bool = True,
    name: str = "",
) -> dict[str, torch.Tensor]:
    """The ``prefix``-ed entries of ``state`` (prefix removed) after checking they fit ``module``.

    With ``strict=False`` only the shapes of the entries both have are checked (what
    ``load_state_dict(strict=False)`` would otherwise fail on with a many-line error).
    ``name`` says what the module is in the message (default: its class name).

    Raises:
        StateMismatchError: ``state`` is not a dict of tensors, or entries are missing,
            unexpected or of another shape; one line naming the first few.

    Example:
        >>> layer = torch.nn.Linear(2, 3)
        >>> check_state_fits(layer, {"weight": torch.zeros(3, 2)}, "file.pt")
        Traceback (most recent call last):
            ...
        speechssl.safe_io.StateMismatchError: file.pt: the weights do not fit Linear: missing bias
    """
    name = name or type(module).__name__
    if not isinstance(state, dict):
        raise StateMismatchError(
            f"{source}: expected a state dict for {name}, found a {type(state).__name__}"
        )
    own = {key[len(prefix) :]: value for key, value in state.items() if str(key).startswith(prefix)}
    expected = module.state_dict()
    problems = []
    missing = sorted(set(expected) - set(own)) if strict else []
    if missing:
        problems.append(f"missing {_listed(missing, 3)}")
    unexpected = sorted(set(own) - set(expected)) if strict else []
    if unexpected:
        problems.append(f"unexpected {_listed(unexpected, 3)}")
    reshaped = [
        f"{key} {tuple(value.shape)} vs {tuple(expected[key].shape)}"
        if isinstance(value, torch.Tensor)
        else f"{key} is a {type(value).__name__}"
        for key, value in own.items()
        if key in expected
        and (not isinstance(value, torch.Tensor) or value.shape != expected[key].shape)
    ]
    if reshaped:
        problems.append(f"shape {_listed(reshaped, 1)}")
    if problems:
        raise StateMismatchError(f"{source}: the weights do not fit {name}: {'; '.join(problems)}")
    return own


def load_state_strict(
    module: torch.nn.Module, state, source: str = "", prefix: str = "", name: str = ""
) -> torch.nn.Module:
    """Check with :func:`check_state_fits`, then ``module.load_state_dict(strict=True)``."""
    own = check_state_fits(module, state, source, prefix, name=name)
    module.load_state_dict(own, strict=True)
    return module


# ---------------------------------------------------------------------------------------
# the run lock


class RunLock:
    """An exclusive ``flock`` on ``folder/.lock`` that records the owner's pid.

    The kernel drops an ``flock`` when its process dies, so a lock file left by a killed
    run is simply taken over. Re-entrant within one process (a recipe and its Trainer may
    lock the same folder). Use as a context manager or with :meth:`acquire`/:meth:`release`.

    Raises (from ``acquire``):
        RunDirBusyError: another process holds the lock (the message names its pid).
        OSError / ValueError: the folder cannot be created (a file is in the way, read-only).

    Example:
        >>> import tempfile
        >>> with RunLock(tempfile.mkdtemp()) as lock:
        ...     lock.held
        True
    """

    # realpath of the lock file -> [file descriptor, acquisitions] of this process
    _held: ClassVar[dict[str, list[int]]] = {}

    def __init__(self, folder: str | os.PathLike, name: str = ".lock") -> None:
        self.folder = Path(folder)
        self.path = self.folder / name
        self.held = False

    def acquire(self) -> RunLock:
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"run folder {self.folder} is a file, not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        key = os.path.realpath(self.path)
        if key in RunLock._held:
            RunLock._held[key][1] += 1
            self.held = True
            return self
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(descriptor)
            raise RunDirBusyError(
                f"{self.folder} is in use by another run (pid {owner}); wait for it to end "
                "or choose another run_dir"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        RunLock._held[key] = [descriptor, 1]
        self.held = True
        return self

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        key = os.path.realpath(self.path)
        entry = RunLock._held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del RunLock._held[key]
            fcntl.flock(entry[0], fcntl.LOCK_UN)
            os.close(entry[0])

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()
