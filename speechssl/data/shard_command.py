"""``speechssl shard MANIFEST OUT_DIR``: pack a prepared manifest into WebDataset shards.

Self-contained (``add_arguments(parser)`` and ``run(args)``) so that it can move with the
other subcommands' argparse code. See :mod:`speechssl.data.shards` for the format.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> args = parser.parse_args(["train.jsonl", "out", "--shard-size", "1GB"])
    >>> args.shard_size, args.shard_seconds
    (1000000000, None)
"""

from __future__ import annotations

import argparse

from speechssl.data.frame_labels import load_frame_labels
from speechssl.data.loaders import load_manifests
from speechssl.data.shards import parse_size, write_shards

__all__ = ["add_arguments", "run"]


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``speechssl shard``."""
    parser.add_argument("manifest", help="a prepared JSONL manifest (speechssl prepare)")
    parser.add_argument("out_dir", help="folder for shard-*.tar, index.json, durations.npy")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument(
        "--shard-seconds", type=_positive_seconds, help="audio seconds per shard, e.g. 3600"
    )
    size.add_argument("--shard-size", type=_size, help="audio bytes per shard, e.g. 1GB")
    parser.add_argument(
        "--labels",
        help="frame labels (a .km file, one line per manifest row) stored with each sample",
    )
    parser.add_argument("--label-rate", type=float, help="frame labels per second (with --labels)")


def run(args: argparse.Namespace) -> int:
    """Write the shards and print one line per shard count, hours and bytes."""
    if (args.labels is None) != (args.label_rate is None):
        raise ValueError("--labels and --label-rate go together")
    labels = None
    if args.labels is not None:
        loaded = load_frame_labels(args.manifest, args.labels, args.label_rate)
        manifest, labels = loaded.manifest, loaded.labels
    else:
        manifest = load_manifests([args.manifest])
    index = write_shards(
        manifest,
        args.out_dir,
        shard_seconds=args.shard_seconds,
        shard_bytes=args.shard_size,
        frame_labels=labels,
        label_rate=args.label_rate,
    )
    total_bytes = sum(shard["bytes"] for shard in index["shards"])
    print(
        f"{args.out_dir}: {len(index['shards'])} shards, {index['samples']} samples, "
        f"{index['seconds'] / 3600:.3f} h, {total_bytes / 1e6:.1f} MB of audio"
    )
    return 0
