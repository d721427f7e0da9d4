"""``archer train [RECIPE] [key=value ...] [--out DIR] [--resume]``.

With no arguments it runs the bundled CPU demo (recipe ``tiny_math``): a tiny model built from scratch,
SFT warm-up, evaluation, ASPO, evaluation again; everything lands in the run directory.

- ``RECIPE``: a bundled recipe name (``archer train --list`` shows them) or a YAML file.
- ``key=value``: dotted overrides, e.g. ``algo.loss=dapo optim.lr=1e-5``.
- ``--out DIR``: the run directory (default ``logging.out_dir/<recipe>-<time>``).
- ``--resume``: continue the run in ``--out DIR`` from its last complete checkpoint, with the config
  saved in that directory (a recipe or overrides given with ``--resume`` are refused).
- ``resources.train_procs=N`` trains data-parallel in N local processes (``archer.distributed.launch``);
  under ``torchrun`` (``WORLD_SIZE`` set) the processes are torchrun's, and only rank 0 prints the report.

The whole config is validated before anything is built; a bad field is reported with its dotted name
and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from archer.config import ConfigError, config_from_dict, load_config, read_yaml_file, recipe_names
from archer.train.checkpoint import CheckpointError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="archer train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("items", nargs="*", help="RECIPE (name or .yaml) then key=value overrides")
    p.add_argument("--out", help="run directory")
    p.add_argument("--resume", action="store_true", help="resume the run in --out from its last checkpoint")
    p.add_argument("--list", action="store_true", help="list the bundled recipes and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return p


def resolve(items: list[str], out: str | None, resume: bool):
    """(config, run_dir) from the command-line items; raises ConfigError on any problem."""
    recipe = None
    overrides = list(items)
    if overrides and "=" not in overrides[0]:
        recipe = overrides.pop(0)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"override {bad[0]!r}: expected dotted.key=value (only the first item may be a recipe)")
    if resume:
        if out is None:
            raise ConfigError("--resume needs --out DIR (the run directory to continue)")
        saved = Path(out) / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"--resume: {saved} not found (not a run directory)")
        if recipe is not None or overrides:
            raise ConfigError("--resume continues with the run's saved config.yaml; "
                              "do not pass a recipe or overrides")
        cfg = config_from_dict(read_yaml_file(saved, "--resume config"))
        return cfg, Path(out)
    cfg = load_config(recipe or "tiny_math", overrides)
    return cfg, (Path(out) if out else None)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.list:
        print("\n".join(recipe_names()))
        return 0
    try:
        cfg, run_dir = resolve(args.items, args.out, args.resume)
    except ConfigError as exc:
        print(f"archer train: config error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(cfg.to_yaml())
        return 0
    from archer.train.rl import train

    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
    except Exception:
        pass
    try:
        summary = train(cfg, run_dir=run_dir, resume=args.resume)
    except ConfigError as exc:
        print(f"archer train: config error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # e.g. a malformed dataset row (names the file and row)
        print(f"archer train: error: {exc}", file=sys.stderr)
        return 2
    except CheckpointError as exc:  # disk full, permissions: the previous checkpoint is intact
        print(f"archer train: error: {exc}", file=sys.stderr)
        return 1
    summary.pop("history", None)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: one report, from rank 0
        return 0
    if summary.get("after"):
        from archer.train.default_run import report

        report(summary)
    else:
        print(json.dumps({k: summary[k] for k in ("run_dir", "steps", "seconds")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
