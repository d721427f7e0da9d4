"""archer train [RECIPE] [key=value ...] [--out DIR] [--resume | --overwrite]

With no arguments it runs the bundled CPU demo (recipe tiny_math): a tiny model built from scratch,
SFT warm-up, evaluation, ASPO, evaluation again; everything lands in the run directory.

- RECIPE: a bundled recipe name (archer train --list shows them) or a YAML file.
- key=value: dotted overrides, e.g. algo.loss=dapo optim.lr=1e-5; options and overrides may come in
  any order.
- --out DIR: the run directory (default logging.out_dir/<recipe>-<time>). A directory that already
  holds files is refused unless --resume (continue it) or --overwrite (delete the old run first) is
  given, so two runs never mix.
- --resume: continue the run in --out DIR from its last complete checkpoint, with the config saved in
  that directory (a recipe or overrides given with --resume are refused).
- Ctrl-C stops the run with one line: the step reached, the last checkpoint and the --resume command;
  a run stopped before its first checkpoint is started afresh by the same command. --resume on a
  finished run says so.
- --verbose shows every message of vLLM, Ray and transformers (their known noise is filtered).
- resources.train_procs=N trains data-parallel in N local processes (archer.distributed.launch);
  under torchrun (WORLD_SIZE set) the processes are torchrun's, and only rank 0 prints the report.
- resources.nodes=N places the ranks as Ray actors on N nodes of the cluster at resources.address,
  train_procs per node (archer.distributed.ray_launch; docs/CLUSTER.md); this process then only drives.

The whole config is validated, and the data files and model folder are checked, before the run
directory is created; a bad field is reported with its dotted name and exit code 2. The longest
prompt plus the longest response must fit the model's positions (GPT-2: 1024); a chat template whose
end of turn the tokenizer cannot emit as one token (ChatML on GPT-2) becomes a rollout.stop string.
data.train / data.eval may name a bundled benchmark sample (math500, aime24, amc23, humaneval, ...);
a recipe's data/<name>.jsonl that does not exist falls back to the bundled sample of that name, with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from archer.config import RECIPE_DIR, config_from_dict, explain, load_config, read_yaml_file, recipe_names
from archer.config.validate import loss_params_in_force
from archer.data.formats import BUNDLED, BUNDLED_DIR
from archer.distributed.quiet import quiet_process
from archer.errors import ConfigError, RankFailure
from archer.models.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints
from archer.rl.loop import make_run_dir, train
from archer.rl.setup import check_response_budget
from archer.tasks.registry import is_task, task_names


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="archer train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("items", nargs="*", help="RECIPE (name or .yaml) and key=value overrides, in any order")
    p.add_argument("--out", help="run directory")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume", action="store_true", help="resume the run in --out from its last checkpoint"
    )
    mode.add_argument(
        "--overwrite", action="store_true", help="delete the run already in --out and start afresh"
    )
    p.add_argument(
        "--list", action="store_true", help="list the bundled recipes and what each needs, and exit"
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (loss defaults filled in) and exit",
    )
    p.add_argument("--explain", action="store_true", help="with --print-config: each setting's help above it")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="show every message of vLLM, Ray and transformers (by default their known noise is filtered)",
    )
    return p


def resolve(items: list[str], out: str | None, resume: bool):
    """(config, run_dir) from the command-line items; raises ConfigError on any problem."""
    names = [o for o in items if "=" not in o]
    overrides = [o for o in items if "=" in o]
    if len(names) > 1:
        raise ConfigError(f"{names[1]!r}: expected dotted.key=value (one recipe only; got {names})")
    recipe = names[0] if names else None
    if resume:
        if out is None:
            raise ConfigError("--resume needs --out DIR (the run directory to continue)")
        saved = Path(out) / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"--resume: {saved} not found (not a run directory)")
        if recipe is not None or overrides:
            raise ConfigError(
                "--resume continues with the run's saved config.yaml; do not pass a recipe or overrides"
            )
        cfg = config_from_dict(read_yaml_file(saved, "--resume config"))
        return cfg, Path(out)
    cfg = load_config(recipe or "tiny_math", overrides)
    return cfg, (Path(out) if out else None)


def _headline(text: str, width: int = 90) -> str:
    """A recipe header's first sentence, ended by ". " outside parentheses (so "(Chen et al. 2025, ...)"
    stays whole); one longer than ``width`` is cut at its first ": " outside parentheses (the name)."""
    depth, sentence, colon = 0, text, -1
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and text.startswith(". ", i):
            sentence = text[:i]
            break
        if depth == 0 and colon < 0 and text.startswith(": ", i):
            colon = i
    return sentence[:colon] if len(sentence) > width and colon > 0 else sentence


def _recipe_summary(name: str) -> tuple[str, str]:
    """(one-line description, what the recipe needs) from a bundled recipe's header and settings."""

    path = RECIPE_DIR / f"{name}.yaml"
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("# ").strip())
    desc = _headline(" ".join(header).replace("`", ""))
    data = read_yaml_file(path, "recipe")
    model_path = (data.get("model") or {}).get("path")
    train = (data.get("data") or {}).get("train", "synthetic_math")
    if model_path is None and is_task(train):
        needs = "CPU demo: builds its model and data, nothing to download"
    else:
        needs = f"needs a model (model.path=DIR, a local copy of {model_path}) and data (data.train=FILE)"
    return desc, needs


def _list_recipes() -> str:
    rows = [(name, *_recipe_summary(name)) for name in recipe_names()]
    width = max(len(r[0]) for r in rows)
    lines = [f"{name:<{width}}  {desc}\n{'':<{width}}  -> {needs}" for name, desc, needs in rows]
    lines.append("\narcher train RECIPE key=value ...   (archer train with no recipe runs tiny_math)")
    return "\n".join(lines)


def _check_inputs(cfg) -> list[str]:
    """Check data files and the model folder before a run directory exists; a missing file that is a
    bundled sample's name (recipes say data/aime24.jsonl) becomes the bundled file. Returns notes."""

    notes = []
    known = f"a file, a bundled sample ({', '.join(BUNDLED)}) or a task ({', '.join(task_names())})"
    for field in ("train", "eval"):
        value = getattr(cfg.data, field)
        if value is None or is_task(value) or Path(value).is_file():
            continue
        stem = Path(value).name.split(".")[0]
        if stem in BUNDLED and (value == stem or not Path(value).exists()):
            setattr(cfg.data, field, str(BUNDLED_DIR / BUNDLED[stem]))
            if value != stem:
                notes.append(f"data.{field}: {value} not found; using the bundled {stem} sample")
            continue
        if field == "eval" and not cfg.eval.enabled:
            continue
        raise ConfigError(f"data.{field}: {value!r} not found; give {known}")
    if cfg.model.path is not None:
        from archer.models.loader import _check_model_dir

        _check_model_dir(cfg.model.path)
        check_response_budget(cfg)
    return notes


INTERRUPTED = "INTERRUPTED"  # a run stopped by Ctrl-C before its first checkpoint: the same --out reruns


def _prepare_run_dir(run_dir: Path | None, resume: bool, overwrite: bool) -> None:
    """Refuse to mix two runs in one directory; --overwrite deletes a previous run (only a directory
    that holds a run's config.yaml, so a mistyped --out . never deletes a project)."""
    if resume or run_dir is None or not run_dir.exists() or int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun rank 0 alone decides (the others would see its fresh files)
    if not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir}: exists and is not a directory")
    if not any(run_dir.iterdir()):
        return
    if (run_dir / INTERRUPTED).is_file() and latest_checkpoint(run_dir) is None and not overwrite:
        import shutil  # interrupted before its first checkpoint: nothing to keep, the same command reruns

        print(
            f"archer train: --out {run_dir}: interrupted before its first checkpoint; starting afresh",
            file=sys.stderr,
        )
        shutil.rmtree(run_dir)
        return
    if not overwrite:
        raise ConfigError(
            f"--out {run_dir}: already holds files (a previous run?); pass --resume to continue "
            "it, --overwrite to delete it and start afresh, or choose another --out"
        )
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(
            f"--overwrite: {run_dir} holds no config.yaml (not a run directory); refusing to delete it"
        )
    import shutil

    shutil.rmtree(run_dir)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_intermixed_args(list(sys.argv[1:] if argv is None else argv))
    if args.list:
        print(_list_recipes())
        return 0
    try:
        cfg, run_dir = resolve(args.items, args.out, args.resume)
        if args.print_config:
            print(explain(cfg) if args.explain else cfg.to_yaml())
            in_force = yaml.safe_dump(loss_params_in_force(cfg), default_flow_style=True, width=10**6).strip()
            print(
                f"# algo.loss_params in force ({cfg.algo.loss}'s registry defaults where unset): {in_force}"
            )
            return 0
        notes = [] if args.resume else _check_inputs(cfg)
        _prepare_run_dir(run_dir, args.resume, args.overwrite)
    except ConfigError as exc:
        print(f"archer train: config error: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"archer train: {note}", file=sys.stderr)

    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
    except Exception:
        pass
    quiet_process(args.verbose)

    run_dir = make_run_dir(cfg, run_dir)
    existed = run_dir.exists()
    if args.resume and (finished := _finished(cfg, run_dir)):
        print(finished, file=sys.stderr)
        return 0
    if args.resume:
        (run_dir / INTERRUPTED).unlink(missing_ok=True)
    try:
        summary = train(cfg, run_dir=run_dir, resume=args.resume)
    except KeyboardInterrupt:
        if os.environ.get("ARCHER_DEBUG"):
            raise
        print(_interrupted(run_dir), file=sys.stderr)
        return 130
    except ConfigError as exc:
        _discard(run_dir, existed)
        print(f"archer train: config error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # e.g. a malformed dataset row (names the file and row)
        _discard(run_dir, existed)
        print(f"archer train: error: {exc}", file=sys.stderr)
        return 2
    except CheckpointError as exc:  # disk full, permissions: the previous checkpoint is intact
        print(f"archer train: error: {exc}", file=sys.stderr)
        return 1
    except RankFailure as exc:  # a rank died or hung (after trainer.max_restarts restarts)
        last = latest_checkpoint(run_dir)
        where = (
            f"; last checkpoint {last}; resume with: archer train --resume --out {run_dir}" if last else ""
        )
        print(f"archer train: error: {exc}{where}", file=sys.stderr)
        return 1
    summary.pop("history", None)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: one report, from rank 0
        return 0
    if summary.get("after"):
        from archer.cli.default_run import report

        report(summary)
    else:
        print(json.dumps({k: summary[k] for k in ("run_dir", "steps", "seconds")}, indent=2))
    return 0


def _last_step(run_dir: Path) -> int:
    """The last step ``metrics.jsonl`` recorded (0 when none)."""
    step = 0
    try:
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            try:
                step = max(step, int(json.loads(line).get("step", 0)))
            except (ValueError, TypeError, AttributeError):
                continue
    except OSError:
        pass
    return step


def _interrupted(run_dir: Path) -> str:
    """The one line Ctrl-C prints: the step reached, the last checkpoint and how to go on. A run with
    no checkpoint yet is marked so that the same command starts it afresh."""
    step, last = _last_step(run_dir), latest_checkpoint(run_dir)
    resume = f"archer train --resume --out {run_dir}"
    if last is not None:
        return f"archer train: interrupted at step {step}; last checkpoint {last}; resume with: {resume}"
    if run_dir.is_dir():
        (run_dir / INTERRUPTED).write_text(f"interrupted at step {step}, before the first checkpoint\n")
    return (
        f"archer train: interrupted at step {step}, before the first checkpoint; rerun the same command "
        f"to start afresh, or resume with: {resume}"
    )


def _finished(cfg, run_dir: Path) -> str | None:
    """A line saying the run in ``run_dir`` already finished (summary.json written at trainer.steps);
    None when there is something to resume."""
    try:
        steps = int(json.loads((run_dir / "summary.json").read_text()).get("steps", -1))
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    if steps < cfg.trainer.steps:
        return None
    ckpts = list_checkpoints(run_dir)
    where = f"; its last checkpoint is {ckpts[-1][1]}" if ckpts else ""
    return (
        f"archer train: --resume: the run in {run_dir} already finished ({steps} of trainer.steps="
        f"{cfg.trainer.steps}; see its summary.json){where}; nothing to resume"
    )


def _discard(run_dir: Path, existed: bool) -> None:
    """A run that failed before its first checkpoint leaves no directory behind (it would make the
    next --out refuse, and it holds nothing to resume)."""
    if existed or not run_dir.is_dir() or (run_dir / "checkpoints").exists():
        return
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
