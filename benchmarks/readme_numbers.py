"""The README's headline runs over several seeds: the spread a reader should expect on their machine.

    python benchmarks/readme_numbers.py                       # tiny_math seeds 0-4, tiny_code seeds 0-2
    python benchmarks/readme_numbers.py --recipes tiny_math --seeds 0,1 --out DIR
    python benchmarks/readme_numbers.py --recipes tiny_interpreter --seeds 0 --results benchmarks/results/tiny_interpreter

Each run is the README's command (``archer train RECIPE``) with ``trainer.seed=S`` (the model's
initialisation, the SFT warm-up order and RL sampling change; the problems do not). A run kept in ``--out``
is reused only when it was made by this script for the same recipe, seed and archer source (a stamp file);
anything else is run again. Writes ``readme_numbers.json`` and ``.md`` to ``benchmarks/results`` (or
``--results``), keeping the entries of recipes not measured in this call: per seed the held-out avg@k before and after RL and the gain,
and per recipe the mean, the sample s.d. and the range over seeds, with the package versions and the CPU.
The seed the README prints is seed 0. ``tests/test_readme_numbers.py`` reruns the fast one (tiny_math,
seed 0) and fails when it leaves the stated spread.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEY = {"tiny_math": "avg@8", "tiny_code": "avg@4", "tiny_interpreter": "avg@8"}


def _stamp(recipe: str, seed: int) -> str:
    """What a kept run must match to be reused: the recipe, the seed and archer's source (code and recipe
    files), so that a changed recipe or trainer never serves an old run's numbers."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import _toy_common

    return json.dumps({"recipe": recipe, "seed": seed, "code": _toy_common.code_version()}, sort_keys=True)


def run(recipe: str, seed: int, out: Path) -> dict:
    run_dir = out / f"{recipe}_s{seed}"
    summary = run_dir / "summary.json"
    stamp = run_dir / "readme_numbers_stamp.json"
    if not (summary.is_file() and stamp.is_file() and stamp.read_text() == _stamp(recipe, seed)):
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)
        cmd = [
            sys.executable,
            "-m",
            "archer",
            "train",
            recipe,
            f"trainer.seed={seed}",
            "logging.progress=false",
        ]
        t0 = time.time()
        subprocess.run([*cmd, "logging.sinks=[]", "--out", str(run_dir)], check=True, cwd=REPO)
        stamp.write_text(_stamp(recipe, seed))
        print(f"{recipe} seed {seed}: {time.time() - t0:.0f} s", flush=True)
    s = json.loads(summary.read_text())
    k = KEY[recipe]
    out = {
        "seed": seed,
        "before": s["before"][k],
        "after": s["after"][k],
        "gain": s["after"][k] - s["before"][k],
        "seconds": s.get("seconds"),
    }
    if "tool_use_rate" in s["before"]:  # tool rollouts: the share of responses that ran code
        out["tool_use_before"], out["tool_use_after"] = s["before"]["tool_use_rate"], s["after"]["tool_use_rate"]
    return out


def spread(values: list[float]) -> dict:
    return {
        "mean": statistics.mean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else float("nan"),
        "min": min(values),
        "max": max(values),
    }


def machine() -> dict:
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default="tiny_math,tiny_code")
    ap.add_argument("--seeds", default=None, help="comma-separated (default: tiny_math 0-4, tiny_code 0-2)")
    ap.add_argument("--out", default=str(REPO / "runs" / "readme_numbers"), help="run directories")
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument(
        "--merge-from",
        default=None,
        help="fold the recipes of another readme_numbers.json (a run written elsewhere) into --results and exit",
    )
    a = ap.parse_args(argv)
    res = Path(a.results)
    old = res / "readme_numbers.json"
    # the recipes measured here replace theirs; the others' entries stay, each with its own machine and date
    out = json.loads(old.read_text()) if old.is_file() else {"recipes": {}}
    out["machine"] = machine()
    if a.merge_from:
        other = json.loads(Path(a.merge_from).read_text())
        for recipe, r in other["recipes"].items():
            when = time.strftime("%Y-%m-%d", time.gmtime(Path(a.merge_from).stat().st_mtime))
            out["recipes"][recipe] = {"machine": other.get("machine"), "measured": when, **r}
        return _write(out, res, argv)
    for recipe in a.recipes.split(","):
        seeds = (
            [int(s) for s in a.seeds.split(",")]
            if a.seeds
            else ([0, 1, 2, 3, 4] if recipe == "tiny_math" else [0, 1, 2])
        )
        runs = [run(recipe, s, Path(a.out)) for s in seeds]
        out["recipes"][recipe] = {
            "measured": time.strftime("%Y-%m-%d", time.gmtime()),
            "machine": out["machine"],
            "metric": KEY[recipe],
            "command": f"archer train {recipe} trainer.seed=S",
            "runs": runs,
            **{f: spread([r[f] for r in runs]) for f in ("before", "after", "gain")},
        }
    return _write(out, res, argv)


def _write(out: dict, res: Path, argv: list[str] | None) -> int:
    res.mkdir(parents=True, exist_ok=True)
    (res / "readme_numbers.json").write_text(json.dumps(out, indent=1))
    m = out["machine"]
    lines = [
        "# The README's headline runs over seeds",
        "",
        f"`python benchmarks/readme_numbers.py`; {m['cpu']}, 2 cores, Python {m['python']}, torch {m['torch']}, "
        f"transformers {m['transformers']}. Seed 0 is the run the README prints.",
        "",
        "| recipe | metric | seed | before | after | gain |",
        "|---|---|---|---|---|---|",
    ]
    for recipe, r in out["recipes"].items():
        if "measured" in r:
            lines.append(f"| {recipe} | measured {r['measured']} | | | | |")
        for x in r["runs"]:
            lines.append(
                f"| {recipe} | {r['metric']} | {x['seed']} | {x['before']:.3f} | {x['after']:.3f} | {x['gain']:+.3f} |"
            )
        lines.append(
            f"| **{recipe}** | mean ± s.d. (range) | {len(r['runs'])} seeds | {r['before']['mean']:.3f} ± {r['before']['sd']:.3f} "
            f"| {r['after']['mean']:.3f} ± {r['after']['sd']:.3f} ({r['after']['min']:.3f}-{r['after']['max']:.3f}) "
            f"| {r['gain']['mean']:+.3f} ± {r['gain']['sd']:.3f} ({r['gain']['min']:+.3f} to {r['gain']['max']:+.3f}) |"
        )
    for recipe, r in out["recipes"].items():
        for x in r["runs"]:
            if "tool_use_before" in x:
                lines.append(
                    f"\n{recipe} seed {x['seed']}: tool-use rate {x['tool_use_before']:.3f} -> {x['tool_use_after']:.3f}, "
                    f"{x['seconds']:.0f} s wall (SFT + RL)"
                )
    for recipe, r in out["recipes"].items():
        seeds = ",".join(str(x["seed"]) for x in r["runs"])
        lines.append(f"\n{recipe}: regenerate with `python benchmarks/readme_numbers.py --recipes {recipe} --seeds {seeds}`")
    (res / "readme_numbers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
