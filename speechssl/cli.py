"""``speechssl`` command line: prepare, export, predict, evaluate, probe-steps, presets.

``shard`` packs a manifest into tar shards for streaming.

Each subcommand lives beside the code it drives and exposes ``add_arguments(parser)``
and ``run(args) -> int``; this module only dispatches. Bad input ends with one line on
stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from speechssl.errors import exit_on_bad_input

# subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "prepare": ("speechssl.data.prepare", "write JSONL manifests for a corpus in its real layout"),
    "export": (
        "speechssl.tasks.export",
        "export an encoder (or a fine-tuned classifier) as safetensors or ONNX",
    ),
    "predict": ("speechssl.tasks.predict", "classify audio files with a fine-tuned run"),
    "evaluate": (
        "speechssl.tasks.evaluate",
        "score an upstream on emotion / speaker ID / verification / your labels, with 95% CIs",
    ),
    "shard": (
        "speechssl.data.shard_command",
        "pack a manifest into WebDataset tar shards for streaming (pip install 'speechssl[shards]')",
    ),
    "probe-steps": (
        "speechssl.tasks.probe_steps",
        "probe every checkpoint of a pre-training run (and its random init) layer by layer",
    ),
    "presets": (
        "speechssl.encoders.catalog",
        "list the encoder presets: family, size, parameters, frame rate",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speechssl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        # argparse %-formats a help string (``%(default)s``): a literal % is written %%
        sub = commands.add_parser(name, help=help_text.replace("%", "%%"), description=help_text)
        sub.set_defaults(_module=module_name)
        importlib.import_module(module_name).add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(args._module)
    # the one error boundary: bad input is one stderr line and exit code 1
    try:
        return int(exit_on_bad_input(f"speechssl {args.command}", module.run, args) or 0)
    except SystemExit as stop:
        return int(stop.code or 0)


if __name__ == "__main__":
    sys.exit(main())
