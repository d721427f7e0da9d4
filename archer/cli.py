"""Command line: ``archer train | sft | eval | data | cluster | export``.

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
    "train": ("archer.train.cli", "RL training from a recipe (no arguments: the bundled CPU demo)"),
    "sft": ("archer.train.sft_cli", "supervised fine-tuning on chat-format data"),
    "eval": ("archer.eval.cli", "generate and score: avg@k / pass@k, checkpoint watcher"),
    "data": ("archer.data.cli", "dedup, decontaminate, filter and convert datasets"),
    "cluster": ("archer.distributed.cluster", "start, join and inspect a Ray cluster"),
    "export": ("archer.distributed.export", "merge a sharded checkpoint into one Hugging Face checkpoint"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: archer <command> [args...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `archer <command> --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"archer: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except (FileNotFoundError, ValueError, KeyError, OSError) as exc:
        # a user's mistake (a missing file, a malformed row, a bad value) gets one clear line, not a
        # traceback; ARCHER_DEBUG=1 re-raises for the full stack
        if os.environ.get("ARCHER_DEBUG"):
            raise
        print(f"archer {name}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
