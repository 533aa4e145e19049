"""The ``speechssl`` console script: Ctrl-C at any moment is one line and exit code 130.

``pyproject.toml``'s ``[project.scripts]`` points here, not at :mod:`speechssl.cli`: this
module imports nothing heavy, so a ``KeyboardInterrupt`` while torch is still importing
(the first seconds of every command) is caught too, where the CLI's own error boundary
(:func:`speechssl.errors.exit_on_bad_input`) does not yet exist.

Example (Ctrl-C pressed while the command starts)::

    $ speechssl evaluate fbank --task emotion --data /data/IEMOCAP_full_release
    ^Cspeechssl: interrupted
    $ echo $?
    130
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["INTERRUPTED", "main"]

# the shell's code for a process ended by SIGINT
INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """``speechssl.cli.main(argv)``, with Ctrl-C during its import or its run caught."""
    try:
        # imported here, inside the handler: importing the CLI imports torch (seconds)
        cli = importlib.import_module("speechssl.cli")
        return cli.main(argv)
    except KeyboardInterrupt:
        print("speechssl: interrupted", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
