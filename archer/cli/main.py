"""Command line: ``archer train | sft | eval | data | rm | cluster | export | status``.

Each subcommand lives in its own module and exposes ``main(argv: list[str]) -> int``; this file only
dispatches, importing the module lazily so that ``archer data`` never pays for torch start-up it does
not need and an optional extra (ray) is only imported by the command that uses it.
"""

from __future__ import annotations

import importlib
import os
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("archer.cli.train", "RL training from a recipe (no arguments: the bundled CPU demo)"),
    "sft": ("archer.cli.sft", "supervised fine-tuning on chat-format data"),
    "eval": ("archer.cli.eval", "generate and score: avg@k / pass@k, checkpoint watcher"),
    "data": ("archer.cli.data", "dedup, decontaminate, filter and convert datasets"),
    "rm": ("archer.cli.rm", "reward models: build pairs, train (Bradley-Terry), score"),
    "cluster": ("archer.cli.cluster", "start, join and inspect a Ray cluster"),
    "export": ("archer.cli.export", "merge a sharded checkpoint into one Hugging Face checkpoint"),
    "status": ("archer.cli.status", "where a training run stands: step, checkpoint, restarts, ranks"),
}


def version() -> str:
    """The installed package's version (pyproject.toml), or ``unknown`` when archer is not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    try:
        return _version("archer")
    except PackageNotFoundError:
        return "unknown"


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: archer [--version] <command> [args...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `archer <command> --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except BrokenPipeError:
        # `archer train --print-config | head`: the reader left; stop quietly (and keep the interpreter's
        # final flush of stdout from raising again)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"archer {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"archer: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        result = int(module.main(rest) or 0)
        sys.stdout.flush()  # a closed pipe surfaces here, inside the BrokenPipeError handler
        return result
    except BrokenPipeError:
        raise
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback through torch or vLLM
        if os.environ.get("ARCHER_DEBUG"):
            raise
        print(f"archer {name}: interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, KeyError, OSError) as exc:
        # a user's mistake (a missing file, a malformed row, a bad value) gets one clear line, not a
        # traceback; ARCHER_DEBUG=1 re-raises for the full stack
        if os.environ.get("ARCHER_DEBUG"):
            raise
        print(f"archer {name}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
