"""Tune one setting of a recipe on its validation split, never on its test split (issue 23).

    python benchmarks/tune_recipe.py tiny_code --key optim.lr --values 1e-4,2e-4,4e-4,8e-4

The recipe must give its task a validation split (``data.generator.validation_fraction``, see
``archer.tasks.draw``). The first value's run builds the SFT model (the recipe's own warm-up); every other
value starts RL from that same model (``model.path``, ``model.sft_epochs=0``), so the runs differ only in
the tuned setting. A ``model.*`` setting (the SFT warm-up's size, epochs, ...) shapes the SFT model itself,
so there every value builds its own. Each run is ``archer train RECIPE data.eval_split=validation KEY=VALUE`` and reports
the held-out metric on validation problems only. The selection rule, fixed in advance: the value with the
highest validation ``--metric`` after RL (the first listed wins a tie). Writes ``tune_<recipe>.{md,json}``
to ``--results``; the test split is not read by anything here: report it afterwards with the chosen value
(``benchmarks/readme_numbers.py``).

Runs always start fresh in ``--out`` (nothing is reused, so a changed recipe or code can never be served
from an old run). Limits: one seed per value, one setting at a time; the differences between values carry
the run's own sampling noise (the md gives each value's paired standard error of its gain).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUIET = ["logging.progress=false", "logging.sinks=[]"]


def run(recipe: str, overrides: list[str], out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "archer", "train", recipe, "data.eval_split=validation", *overrides, *QUIET]
    t0 = time.time()
    subprocess.run([*cmd, "--out", str(out)], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    return {"overrides": overrides, "seconds": round(time.time() - t0, 1), **summary}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipe")
    ap.add_argument("--key", required=True, help="the dotted setting to tune, e.g. optim.lr")
    ap.add_argument(
        "--values", required=True, help="comma-separated values, the first one builds the SFT model"
    )
    ap.add_argument("--metric", default="avg@4")
    ap.add_argument("--out", default=str(REPO / "runs" / "tune"))
    ap.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--name", default=None, help="results file stem (default tune_RECIPE)")
    a = ap.parse_args(argv)
    name = a.name or f"tune_{a.recipe}"
    shared_sft = not a.key.startswith("model.")
    values = [v.strip() for v in a.values.split(",") if v.strip()]
    out = Path(a.out) / a.recipe
    rows = []
    for i, v in enumerate(values):
        extra = [f"{a.key}={v}"]
        if i and shared_sft:
            extra += [f"model.path={out / values[0] / 'sft_model'}", "model.sft_epochs=0"]
        r = run(a.recipe, extra, out / v)
        before, after = r["before"][a.metric], r["after"][a.metric]
        rows.append({"value": v, "before": before, "after": after, "gain": after - before, "run": r})
        print(
            f"{a.key}={v}: validation {a.metric} {before:.3f} -> {after:.3f} ({r['seconds']:.0f} s)",
            flush=True,
        )
    best = max(rows, key=lambda x: x["after"])  # max() keeps the first of equal values
    res = Path(a.results)
    res.mkdir(parents=True, exist_ok=True)
    blob = {"recipe": a.recipe, "key": a.key, "metric": a.metric, "chosen": best["value"], "rows": rows}
    (res / f"{name}.json").write_text(json.dumps(blob, indent=1, default=str))
    lines = [
        f"# Tuning `{a.key}` of `{a.recipe}` on its validation split",
        "",
        f"`python benchmarks/tune_recipe.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        f"| {a.key} | validation {a.metric} before RL | after RL | gain (paired s.e.) | wall s |",
        "|---|---|---|---|---|",
    ]
    for x in rows:
        imp = x["run"].get("improvement", {})
        se = imp.get("avg_se")  # the paired standard error of the avg@k gain
        se_txt = f" ({se:.3f})" if isinstance(se, (int, float)) else ""
        lines.append(
            f"| {x['value']} | {x['before']:.3f} | {x['after']:.3f} | {x['gain']:+.3f}{se_txt} | {x['run']['seconds']:.0f} |"
        )
    lines += [
        "",
        f"Chosen by the rule fixed in advance (highest validation {a.metric} after RL): **{a.key}={best['value']}**. "
        "The test split was not evaluated here.",
    ]
    (res / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
