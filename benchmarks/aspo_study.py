"""Does ASPO do what Archer2.0 claims? A controlled study on a task where entropy can collapse (issue 13).

Claim under test (Archer2.0, "ASPO", arXiv 2510.06062; building on Archer/DTC's entropy-aware
clipping, arXiv 2507.15778): flipping the importance ratio of positive-advantage tokens (``1/r``
instead of ``r``) stops the off-policy updates from over-sharpening the tokens they reward, so the
policy's entropy does not collapse, at no accuracy cost, compared with GRPO/DAPO-style clipping.

Task: ``data.train=synthetic_paths`` (``archer/recipes/tiny_paths.yaml``): sums of four numbers where
every addition order is a correct worked solution, SFT-warmed on randomly ordered demonstrations, so
the SFT policy has real entropy at the fork tokens and a collapse shows up as fewer distinct correct
paths. Every variant starts from the same cached SFT checkpoint (``_toy_common.sft_checkpoint``) and
makes ``--epochs`` x ``--mini-batches`` optimizer steps per rollout batch (default 3 x 4, as Archer2.0).

Variants (all with the grpo advantage and token-mean aggregation; only ``algo.loss``/``loss_params``
change): GRPO (``ppo``, clip 0.2), DAPO (clip-higher 0.28), ASPO as released (the recipe's:
0.2 / 0.4 for the top-20% entropy tokens, dual clip 3, KL 0.001), ASPO flip only (ASPO with every clip
at 0.2 and no KL: only the ratio flip differs from GRPO), DTC, GPPO and CISPO (registry defaults).

Primary measure (declared in :data:`DESIGN` before the runs): the entropy at the **operand-choice
tokens** (:func:`char_roles`: the first operand and every operand picked while two or more were left),
measured after each step on that step's own training samples (:func:`role_entropies`), mean of the last
5 steps, variant minus GRPO paired by seed, 60 steps x 5 seeds. The top-20% entropy tokens are only
partly forks: result digits (arithmetic uncertainty, which RL should remove) are among them too, so
their share is reported beside it.

Also recorded per RL step and seed (seed means in the plot): mean token entropy (``actor/entropy``),
fork-token entropy (``actor/entropy_fork``, top-20% entropy tokens), distinct correct solution paths per
prompt (read back from the sampled responses with ``synthetic_paths.solution_path``), train accuracy,
held-out avg@k / pass@k (``eval.every`` steps, plus before and after), mean ratio r on positive- and
negative-advantage tokens and the clip fractions by sign.

Paired probe (``--probe-batches``, >= 8 in the full run): from the SFT weights, sample one rollout batch;
every variant makes its ``epochs x mini-batches`` update on that same batch from the same weights; the
entropy change of the policy on that batch's tokens (all and fork tokens) is recorded. Repeated over
batches, the paired difference to GRPO gets a 95% t-interval. This separates "the loss changes the
entropy per update" from "the change accumulates over a run". The same probe at 1 epoch x 1 mini-batch
is the on-policy control: r = 1 there, so every variant's gradient is ``-A grad log p`` (the KL terms
have zero gradient at the reference). The control compares the gradients themselves
(:class:`GradientTap`, clipping off), which sees a loss off by a constant factor, and the entropy
changes; the script fails (exit 1) unless both coincide to float-rounding level.

Outputs: ``aspo_study.png`` (all curves and the probe), ``aspo_study.md`` (table, probe, control,
verdict) and ``aspo_study.json`` in ``--out-dir`` (default ``benchmarks/results``; quick:
``runs/bench_logs/aspo_study_quick``). Finished runs are kept under ``runs/bench_logs/aspo_study*/`` and
reused by a rerun with the same settings; ``--fresh`` ignores them.

Run: ``python benchmarks/aspo_study.py`` (the declared design: GRPO, ASPO, ASPO-flip x 5 seeds x 60
steps; about 40 min on 2 cores, or split it with ``--variants`` into two processes and rerun once to
collect) or ``--quick`` (smoke). ``--variants`` adds DAPO, DTC, GPPO, CISPO.

Limits: a 0.57M-parameter model on a toy task, tens of steps, a few seeds: it tests the mechanism, not
the paper's 1.5B-parameter results. The probe's updates start from a fresh AdamW (its first steps are
sign-like), so per-update sizes are those of early training. The verdict is written from the numbers
by rules fixed in advance (:data:`DESIGN`, :func:`verdict`): "effect", "no effect larger than the margin" or
"inconclusive", with the smallest effect the design could detect.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _toy_common as common  # noqa: E402

RECIPE = "tiny_paths"
_FLIP = (
    "{clip_low: 0.2, clip_high: 0.2, high_entropy_clip_low: 0.2, high_entropy_clip_high: 0.2, "
    "dual_clip_c: 3.0, entropy_quantile: 0.8, kl_coef: 0}"
)
# variant -> overrides of the recipe (whose own algo section is ASPO as released)
VARIANTS: dict[str, list[str]] = {
    "GRPO": ["algo.loss=ppo", "algo.loss_params={}"],
    "DAPO": ["algo.loss=dapo", "algo.loss_params={}"],
    "ASPO": [],
    "ASPO-flip": ["algo.loss=aspo", f"algo.loss_params={_FLIP}"],
    "DTC": ["algo.loss=dtc", "algo.loss_params={}"],
    "GPPO": ["algo.loss=gppo", "algo.loss_params={}"],
    "CISPO": ["algo.loss=cispo", "algo.loss_params={}"],
}
COLORS = {
    "GRPO": "tab:blue",
    "DAPO": "tab:green",
    "ASPO": "tab:red",
    "ASPO-flip": "salmon",
    "DTC": "tab:orange",
    "GPPO": "tab:purple",
    "CISPO": "tab:brown",
}
STEP_KEYS = {  # curve name -> metrics key
    "entropy": "actor/entropy",
    "entropy_fork": "actor/entropy_fork",
    "accuracy": "reward/accuracy",
    "ratio_pos": "actor/ratio_mean_pos",
    "ratio_neg": "actor/ratio_mean_neg",
    "clip_pos_upper": "actor/clip_frac_pos_upper",
    "clip_neg_lower": "actor/clip_frac_neg_lower",
    "clip_pos_lower": "actor/clip_frac_pos_lower",
    "clip_neg_upper": "actor/clip_frac_neg_upper",
}
# per-step role measures (:func:`role_entropies` after each step, on that step's own samples)
ROLE_KEYS = (
    "entropy_choice",
    "entropy_result",
    "entropy_copy",
    "entropy_forced",
    "top20_share_choice",
    "top20_share_result",
)
# smoke mode: a 3-operand task and a short SFT at batch 1 (held-out avg@4 ~0.1, pass@4 ~0.4, measured), so
# the groups have reward signal and every variant really updates (a 0-reward smoke run would test nothing)
QUICK = [
    "model.sft_examples=1600",
    "model.sft_epochs=1",
    "model.sft_batch_size=1",
    "data.num_train=400",
    "data.generator={operands: 3, max_value: 9}",
    "rollout.n=4",
    "rollout.max_gen_batches=4",
    "data.num_eval=8",
]
# ------------------------------------------------------------------------------------- scoring


class RecordingScorer:
    """The run's own scorer (``build_run_scorer``), also keeping every scored train-split response, so
    that the distinct correct paths of a step can be counted from what the policy sampled."""

    def __init__(self, cfg: Any) -> None:
        from archer.rewards.scoring import build_run_scorer

        self.inner = build_run_scorer(cfg)
        self.pending: list[tuple[str, Any]] = []

    def score(self, responses: list[str], problems: list[Any]) -> list[Any]:
        for r, p in zip(responses, problems):
            if p.meta.get("split") == "train":
                self.pending.append((r, p))
        return self.inner.score(responses, problems)

    def take(self) -> list[tuple[str, Any]]:
        out, self.pending = self.pending, []
        return out

    def close(self) -> None:
        self.inner.close()


def distinct_correct_paths(scored: list[tuple[str, Any]]) -> float:
    """Mean over the sampled prompts of the number of distinct correct paths among its responses."""
    from archer.tasks.synthetic_paths import solution_path

    by_prompt: dict[str, set] = {}
    for response, problem in scored:
        paths = by_prompt.setdefault(problem.id, set())
        path = solution_path(response, problem)
        if path is not None:
            paths.add(path)
    return statistics.mean(len(v) for v in by_prompt.values()) if by_prompt else float("nan")


# ------------------------------------------------------------------------------------- fork roles

ROLES = ("choice", "forced", "copy", "result", "answer", "other")
_STEP_AT = re.compile(r"(\d+)\+(\d+)=(\d+)")
_BOX_AT = re.compile(r"\\boxed\{(\d+)\}")


def char_roles(response: str, operands: int) -> list[str]:
    """The role of each character of a ``synthetic_paths`` response (``a+b=s1, s1+c=s2, ... \\boxed{t}``):

    - ``choice``: a digit of an operand picked while at least two were still unused: the first
      operand and the second operand of every step but the last (the path's forks; with ``operands``
      = 4 there are three per response, picking among 4, 3 and 2);
    - ``forced``: the last step's second operand (one left, if the solution is faithful);
    - ``copy``: the first number of every later step (it repeats the previous result);
    - ``result``: a step's sum (arithmetic, where RL should remove uncertainty); ``answer``: the box;
    - ``other``: everything else (signs, separators, text the template does not expect).

    Roles come from the text's structure, not from whether the numbers are right: an unfaithful step
    still has its operand and result positions."""
    roles = ["other"] * len(response)
    head = response.split("\\boxed")[0]

    def mark(span: tuple[int, int], role: str) -> None:
        for i in range(*span):
            roles[i] = role

    for s, m in enumerate(_STEP_AT.finditer(head)):
        mark(m.span(1), "choice" if s == 0 else "copy")
        mark(m.span(2), "choice" if s + 1 <= operands - 2 else "forced")
        mark(m.span(3), "result")
    for m in _BOX_AT.finditer(response):
        mark(m.span(1), "answer")
    return roles


def token_roles(response_ids: list[int], tokenizer: Any, operands: int) -> list[str]:
    """The role of each response token: the role of the characters it decodes to (a token spanning
    several roles takes the first one that is not ``other``). The text is decoded prefix by prefix, so
    the spans are those of the sampled tokens themselves, not of a re-tokenisation."""
    ends = [0]
    for t in range(1, len(response_ids) + 1):
        ends.append(len(tokenizer.decode(response_ids[:t], skip_special_tokens=False)))
    text = tokenizer.decode(response_ids, skip_special_tokens=False)
    chars = char_roles(text, operands)
    out = []
    for a, b in zip(ends, ends[1:]):
        span = [r for r in chars[a:b] if r != "other"]
        out.append(span[0] if span else "other")
    return out


def role_entropies(model: Any, tokenizer: Any, cfg: Any, scored: list[tuple[str, Any]]) -> dict[str, Any]:
    """Mean next-token entropy (nats, T=1) of ``model`` at each role's tokens of the given responses
    (its own recent samples), and which roles make up the top-20% entropy tokens ("fork" tokens as
    Archer/DTC and ``actor/entropy_fork`` define them). Responses are re-encoded from their text after
    the chat-formatted prompt (the sampler's exact ids are not kept by the scorer)."""
    import torch

    from archer.rl.batch import pack
    from archer.rl.setup import encode_prompts
    from archer.rl.update import TokenScorer

    if not scored:
        return {}
    d = cfg.data
    k = len(scored[0][1].meta["nums"])
    prompts = encode_prompts([p for _, p in scored], tokenizer, d.max_prompt_tokens, d.prompt_template)
    resp = [tokenizer(r, add_special_tokens=False)["input_ids"] for r, _ in scored]
    keep = [i for i, r in enumerate(resp) if r]
    batch = pack([(prompts[i], resp[i]) for i in keep], tokenizer.pad_token_id)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        _, ent = TokenScorer(model, share_prompts=False)(
            batch["input_ids"], batch["attention_mask"], batch["response_mask"]
        )
    model.train(was_training)
    values: list[float] = []
    roles: list[str] = []
    for row, i in enumerate(keep):
        start = len(prompts[i])
        values += ent[row, start : start + len(resp[i])].tolist()
        roles += token_roles(resp[i], tokenizer, k)
    h = torch.tensor(values)
    top = h >= torch.quantile(h, 0.8)
    out: dict[str, Any] = {"tokens": len(values)}
    for role in ROLES:
        sel = torch.tensor([r == role for r in roles])
        out[f"entropy_{role}"] = float(h[sel].mean()) if sel.any() else float("nan")
        out[f"top20_share_{role}"] = float((sel & top).sum() / top.sum())
    return out


# ------------------------------------------------------------------------------------- runs


def run_variant(
    name: str,
    seed: int,
    base: list[str],
    quick: bool,
    ckpt: Path,
    train: list[Any],
    evals: list[Any],
    cache: Path,
) -> dict[str, Any]:
    """One variant, one RL seed (``trainer.seed``: sampling and mini-batch order)."""
    overrides = base + VARIANTS[name] + [f"trainer.seed={seed}"]
    cfg = common.toy_config(overrides, quick=quick, recipe=RECIPE)
    scorer = RecordingScorer(cfg)
    paths: list[float] = []
    roles: list[dict[str, Any]] = []
    k = max(cfg.eval.ks)

    def after_step(step: int, metrics: dict[str, Any], model: Any, tok: Any) -> None:
        scored = scorer.take()
        paths.append(distinct_correct_paths(scored))
        roles.append(role_entropies(model, tok, cfg, scored))

    def summarize(out: dict[str, Any], model: Any, tok: Any) -> dict[str, Any]:
        hist = out["history"]
        return {
            "name": name,
            "seed": seed,
            "paths": paths,
            **{c: [r.get(c) for r in roles] for c in ROLE_KEYS},
            **{c: [h.get(mk) for h in hist] for c, mk in STEP_KEYS.items()},
            "before": out["before"],
            "after": out["after"],
            **common.heldout_curve(out, k),  # before (step 0), every eval.every steps, after
        }

    res = common.rl_run(
        f"{name}_s{seed}",
        cfg,
        ckpt,
        train,
        evals,
        cache,
        summarize,
        scorer=scorer,
        step_hook=after_step,
    )
    print(f"{name} seed {seed}: {res['wall']:.0f} s, after {res['after']}", flush=True)
    return res


# ------------------------------------------------------------------------------------- probe


def _entropies(model: Any, batch: Any) -> Any:
    """[N] per-token entropy (nats, T=1) of ``model`` on the batch's trained response tokens."""
    import torch

    from archer.rl.update import TokenScorer

    with torch.no_grad():
        _, ent = TokenScorer(model, share_prompts=False)(
            batch.input_ids, batch.attention_mask, batch.response_mask
        )
    return ent[batch.response_mask != 0]


def probe(
    base: list[str],
    quick: bool,
    ckpt: Path,
    train: list[Any],
    batches: int,
    names: list[str],
    epochs: int,
    mini_batches: int,
) -> dict[str, Any]:
    """Paired probe: per rollout batch (sampled once from the SFT weights), each variant's change of
    the mean token entropy and of the fork-token entropy after its ``epochs x mini_batches`` update."""
    import copy

    import torch

    from archer.rl.batch import build_batch, collect_groups
    from archer.rl.run import RLRun
    from archer.rl.settings import needs_reference
    from archer.rl.step import rollout_round, train_on

    on_policy = epochs == 1 and mini_batches == 1
    settings = [
        f"trainer.ppo_epochs={epochs}",
        f"trainer.mini_batches={mini_batches}",
        "optim.warmup_steps=0",
    ]
    if on_policy:  # the control compares raw gradients: no clipping may rescale a wrong one back
        settings.append("optim.grad_clip=1e30")
    cfg0 = common.toy_config(base + VARIANTS["GRPO"] + settings, quick=quick, recipe=RECIPE)
    model0, tok = common.load_policy(ckpt)
    state0 = copy.deepcopy(model0.state_dict())
    sampler_run = RLRun(
        cfg0,
        Path("."),
        model=model0,
        tokenizer=tok,
        train_problems=train,
        eval_problems=[],
        log=lambda s: None,
    )
    out: dict[str, Any] = {
        "epochs": epochs,
        "mini_batches": mini_batches,
        "delta": {n: [] for n in names},
        "delta_fork": {n: [] for n in names},
        "param_gap": {n: [] for n in names},
        "grad_gap": {n: [] for n in names},
        "batches": 0,
        "entropy_before": [],
    }
    runs = {n: None for n in names}
    for b in range(batches):
        sampler_run.step = 10_000 + b  # its own sampling seeds, apart from the RL runs'
        groups, _ = collect_groups(
            lambda i: rollout_round(sampler_run, i, cfg0.rollout.max_new_tokens).groups,
            cfg0.rollout.batch_size,
            cfg0.rollout.max_gen_batches,
            True,
        )
        if not groups:
            continue
        batch = build_batch(cfg0, groups, tok.pad_token_id, torch.device("cpu"))
        h0 = _entropies(model0, batch)
        fork = h0 >= torch.quantile(h0, 0.8)
        out["batches"] += 1
        out["entropy_before"].append(float(h0.mean()))
        moved: dict[str, Any] = {}
        grads: dict[str, Any] = {}
        for n in names:
            cfg = common.toy_config(base + VARIANTS[n] + settings, quick=quick, recipe=RECIPE)
            model = copy.deepcopy(model0)
            ref = copy.deepcopy(model0) if needs_reference(cfg) else None
            run = RLRun(
                cfg,
                Path("."),
                model=model,
                tokenizer=tok,
                train_problems=train,
                eval_problems=[],
                log=lambda s: None,
                ref_model=ref,
            )
            with GradientTap() as tap:
                train_on(run, groups, cfg.rollout.max_new_tokens)
            grads[n] = tap.first
            h1 = _entropies(model, batch)
            out["delta"][n].append(float((h1 - h0).mean()))
            out["delta_fork"][n].append(float((h1 - h0)[fork].mean()))
            moved[n] = torch.cat([(p - state0[k]).flatten() for k, p in model.state_dict().items()])
            run.scorer.close()
            runs[n] = None
        for n, gap in gradient_gaps(grads).items():
            out["grad_gap"][n].append(gap)
        for n in names:  # how far each variant's weights land from GRPO's, relative to GRPO's step
            ref_step = moved.get("GRPO", moved[names[0]])
            out["param_gap"][n].append(
                float((moved[n] - ref_step).abs().max() / ref_step.abs().max().clamp_min(1e-30))
            )
        print(
            f"probe {epochs}x{mini_batches} batch {b}: entropy {out['entropy_before'][-1]:.3f}, change "
            + ", ".join(f"{n} {out['delta'][n][-1]:+.4f}" for n in names),
            flush=True,
        )
    sampler_run.scorer.close()
    ref_name = "GRPO" if "GRPO" in names else names[0]
    out["paired"] = {
        n: common.mean_ci([a - g for a, g in zip(out["delta"][n], out["delta"][ref_name])]) for n in names
    }
    out["paired_fork"] = {
        n: common.mean_ci([a - g for a, g in zip(out["delta_fork"][n], out["delta_fork"][ref_name])])
        for n in names
    }
    out["mean_delta"] = {n: common.mean_ci(out["delta"][n]) for n in names}
    return out


class GradientTap:
    """Within the ``with`` block, records the gradient of the first optimizer step (every parameter's
    ``.grad`` flattened, just before ``step()``, after any clipping), whatever the optimizer: the
    control's direct gradient comparison. AdamW's first step is about lr * sign(g), so comparing
    weights or entropies after one step cannot see a gradient that is wrong by a constant factor;
    comparing the gradients does."""

    def __init__(self) -> None:
        self.first: Any = None
        self._handle: Any = None

    def _hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        import torch

        if self.first is None:
            self.first = torch.cat(
                [
                    (p.grad if p.grad is not None else torch.zeros_like(p)).detach().flatten().double()
                    for g in optimizer.param_groups
                    for p in g["params"]
                ]
            )

    def __enter__(self) -> GradientTap:
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        self._handle = register_optimizer_step_pre_hook(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()


def gradient_gaps(grads: dict[str, Any], ref: str = "GRPO") -> dict[str, float]:
    """max |g_variant - g_ref| / max |g_ref| per variant (0 when they coincide; 1 for a gradient off by
    a factor 2; inf when the reference is zero and the variant is not). Variants without a gradient
    (no optimizer step) are left out."""
    if ref not in grads or grads[ref] is None:
        ref = next((n for n, g in grads.items() if g is not None), ref)
    g0 = grads.get(ref)
    if g0 is None:
        return {}
    scale = float(g0.abs().max())
    out = {}
    for n, g in grads.items():
        if g is None:
            continue
        gap = float((g - g0).abs().max())
        out[n] = gap / scale if scale > 0 else (0.0 if gap == 0 else float("inf"))
    return out


def control_gap(ctrl: dict[str, Any]) -> float:
    """Largest |entropy change of a variant - GRPO's| over the control's batches, relative to the
    largest |entropy change| (0 when they coincide)."""
    names = list(ctrl["delta"])
    ref = ctrl["delta"].get("GRPO", ctrl["delta"][names[0]])
    scale = max((abs(v) for v in ref), default=0.0)
    gap = max((abs(a - g) for n in names for a, g in zip(ctrl["delta"][n], ref)), default=0.0)
    return gap / scale if scale > 0 else (0.0 if gap == 0 else float("inf"))


# ------------------------------------------------------------------------------------- summary


def _tail(values: list[Any], k: int) -> float:
    vals = [v for v in values[-k:] if v is not None and v == v]
    return statistics.mean(vals) if vals else float("nan")


def combine(name: str, runs: list[dict[str, Any]], last: int) -> dict[str, Any]:
    keys = list(STEP_KEYS) + list(ROLE_KEYS) + ["paths", "avg_at_k", "pass_at_k"]
    curves = {c: common.mean_curve(runs, c) for c in keys}
    return {
        "name": name,
        "seeds": [r["seed"] for r in runs],
        "eval_steps": runs[0]["eval_steps"],
        **curves,
        "tail": {
            c: [_tail(r[c], last) for r in runs]
            for c in ("entropy", "entropy_fork", "paths", "accuracy", *ROLE_KEYS)
        },
        "first": {c: [r[c][0] for r in runs] for c in ROLE_KEYS},
        "final": {c: [r[c][-1] for r in runs] for c in ("avg_at_k", "pass_at_k")},
        "wall": statistics.mean(r["wall"] for r in runs),
    }


def _fmt(vals: list[float]) -> str:
    vals = [v for v in vals if v is not None and v == v]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}"


def _share(d: dict[str, list[float]]) -> str:
    """Mean over seeds of the top-20% shares: ``choice / result``."""
    c, r = (statistics.mean(d[f"top20_share_{x}"]) for x in ("choice", "result"))
    return f"{c:.2f} / {r:.2f}"


def _ci(t: tuple[float, float, float]) -> str:
    m, lo, hi = t
    return f"{m:+.4f}" if lo != lo else f"{m:+.4f} [{lo:+.4f}, {hi:+.4f}]"


# Declared before the runs (issue 23; 2026-12-05, before any run measured the operand-choice entropy): one
# primary measure, its margin, the seeds; the rest is secondary. The primary measure is the entropy at the
# operand-choice tokens (:func:`char_roles`), the only tokens where entropy is path diversity: the audit
# found ~39% of the top-20% entropy tokens to be result digits, arithmetic uncertainty that RL should remove.
# Margin: a quarter of the fork-token entropy GRPO lost in the earlier 24-step study (1.16 -> 0.94 nats,
# ~0.22): an ASPO advantage below ~0.05 nats would not matter for "ASPO counters entropy collapse".
DESIGN = common.StudyDesign(
    question="ASPO keeps more entropy at the operand-choice (fork) tokens than GRPO",
    primary=(
        "last-5-steps mean entropy at operand-choice tokens of the policy's own training samples, "
        "variant - GRPO, paired by seed"
    ),
    unit="nats",
    margin=0.05,
    seeds=(0, 1, 2, 3, 4),
    secondary=(
        "last-steps mean entropy over all tokens (the earlier primary)",
        "per-update entropy change in the paired probe (all tokens; top-20% tokens)",
        "distinct correct paths per prompt",
        "final held-out avg@k",
    ),
)
STEPS = 60  # declared with DESIGN: the audit's pending 60-step x 5-seed run
DEFAULT_VARIANTS = ("GRPO", "ASPO", "ASPO-flip")


def verdict(results: dict[str, dict[str, Any]], prb: dict[str, Any] | None, name: str = "ASPO") -> str:
    """The verdict on ``name`` (ASPO as released, or ASPO-flip) vs GRPO: one of the three outcomes of
    :func:`_toy_common.decide` on :data:`DESIGN`'s primary measure (the last steps' mean entropy, paired
    by seed); the probe and the accuracy are reported as secondary measures, never as the verdict."""
    if name not in results or "GRPO" not in results:
        return f"Verdict: not judged ({name} and GRPO were not both run)."
    a, g = results[name], results["GRPO"]
    diffs = [x - y for x, y in zip(a["tail"]["entropy_choice"], g["tail"]["entropy_choice"])]
    decision = common.decide(diffs, DESIGN.margin)
    tok = common.mean_ci([x - y for x, y in zip(a["tail"]["entropy"], g["tail"]["entropy"])])
    secondary = [f"all-token entropy {name} - GRPO {_ci(tok)} nats"]
    if prb is not None and name in prb.get("paired", {}):
        fork = _ci(prb["paired_fork"][name]) if "paired_fork" in prb else "n/a"
        secondary.append(
            f"per-update entropy change {name} - GRPO {_ci(prb['paired'][name])} nats over "
            f"{prb['batches']} paired batches (fork tokens {fork})"
        )
    fa, fg = (
        statistics.mean(r["final"]["avg_at_k"]) if r["final"]["avg_at_k"] else float("nan") for r in (a, g)
    )
    secondary.append(f"final held-out avg@k {name} {fa:.3f} vs GRPO {fg:.3f}")
    pa, pg = (statistics.mean(r["tail"]["paths"]) for r in (a, g))
    secondary.append(f"distinct correct paths per prompt (last steps) {name} {pa:.3f} vs GRPO {pg:.3f}")
    return (
        f"Verdict on '{name} keeps more entropy at the operand-choice tokens than GRPO' (rules fixed in "
        "advance): "
        f"{common.describe(decision, DESIGN)} Secondary measures (not the verdict): {'; '.join(secondary)}."
    )


def plot(results: dict[str, dict[str, Any]], prb: dict[str, Any] | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("entropy", "mean token entropy (nats)"),
        ("entropy_fork", "fork-token entropy (top 20%)"),
        ("paths", "distinct correct paths / prompt"),
        ("accuracy", "train accuracy"),
        ("avg_at_k", "held-out avg@k"),
        ("pass_at_k", "held-out pass@k"),
        ("ratio_pos", "mean r, A > 0 tokens"),
        ("ratio_neg", "mean r, A < 0 tokens"),
        ("clip_pos_upper", "clip frac A>0, r > 1+eps"),
        ("clip_neg_lower", "clip frac A<0, r < 1-eps"),
    ]
    fig, axes = plt.subplots(3, 4, figsize=(20, 12))
    flat = axes.flatten()
    for ax, (key, label) in zip(flat, panels):
        for n, r in results.items():
            xs = r["eval_steps"] if key in ("avg_at_k", "pass_at_k") else range(1, len(r[key]) + 1)
            pts = [(x, v) for x, v in zip(xs, r[key]) if v is not None]
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker="o",
                ms=2.5,
                lw=1.3,
                color=COLORS.get(n),
                label=n,
            )
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("RL step", fontsize=8)
        ax.grid(alpha=0.3)
    flat[0].legend(fontsize=7)
    if prb is not None:
        for ax, key, label in (
            (flat[10], "paired", "probe: entropy change - GRPO's (95% CI)"),
            (flat[11], "paired_fork", "probe: fork entropy change - GRPO's (95% CI)"),
        ):
            names = list(prb[key])
            for i, n in enumerate(names):
                m, lo, hi = prb[key][n]
                err = [[m - lo], [hi - m]] if lo == lo else None
                ax.errorbar([i], [m], yerr=err, fmt="o", color=COLORS.get(n), capsize=4)
            ax.axhline(0, color="k", lw=0.8)
            ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
            ax.set_title(f"{label}, {prb['batches']} batches", fontsize=9)
            ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=None, help=f"RL steps per run (default {STEPS}; quick 2)")
    ap.add_argument("--epochs", type=int, default=3, help="trainer.ppo_epochs")
    ap.add_argument("--mini-batches", type=int, default=4, help="trainer.mini_batches")
    ap.add_argument(
        "--seeds", default=None, help=f"comma-separated RL seeds (default the design's {DESIGN.seeds}; quick 0)"
    )
    ap.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated subset of {list(VARIANTS)} (default {','.join(DEFAULT_VARIANTS)})",
    )
    ap.add_argument("--batch-size", type=int, default=None, help="prompts per step (default 8; quick 4)")
    ap.add_argument("--eval-every", type=int, default=None, help="held-out eval every N steps (default 15)")
    ap.add_argument(
        "--probe-batches", type=int, default=None, help="paired-probe batches (default 8; quick 2; 0 = none)"
    )
    ap.add_argument("--last", type=int, default=5, help="steps averaged for the 'last steps' columns")
    ap.add_argument("--quick", action="store_true", help="smoke mode (tiny SFT, 2 steps, 1 seed, small eval)")
    ap.add_argument("--fresh", action="store_true", help="ignore finished runs kept from an earlier run")
    ap.add_argument("--out-dir", default=None, help="where the .md/.png/.json go")
    a = ap.parse_args(argv)
    names = [n.strip() for n in a.variants.split(",") if n.strip()]
    bad = [n for n in names if n not in VARIANTS]
    if bad:
        raise SystemExit(f"unknown variant(s) {bad}; valid: {list(VARIANTS)}")
    default_seeds = "0" if a.quick else ",".join(map(str, DESIGN.seeds))
    seeds = [int(x) for x in (a.seeds or default_seeds).split(",") if x.strip()]
    steps = a.steps or (2 if a.quick else STEPS)
    batch = a.batch_size or (4 if a.quick else 8)
    every = a.eval_every or (1 if a.quick else 15)
    nprobe = a.probe_batches if a.probe_batches is not None else (2 if a.quick else 8)
    base = [
        f"trainer.steps={steps}",
        f"trainer.ppo_epochs={a.epochs}",
        f"trainer.mini_batches={a.mini_batches}",
        f"rollout.batch_size={batch}",
        f"eval.every={every}",
        "data.num_eval=32",
    ]
    if a.quick:
        base += QUICK
    out_dir, cache = common.study_dirs("aspo_study", a.quick, a.out_dir, a.fresh)
    t0 = time.time()
    cfg = common.toy_config(base, quick=a.quick, recipe=RECIPE)
    ckpt, sft_info = common.sft_checkpoint(cfg)
    train, evals = common.problems(cfg)
    print(f"SFT checkpoint {ckpt}", flush=True)

    results: dict[str, dict[str, Any]] = {}
    for n in names:
        results[n] = combine(
            n, [run_variant(n, s, base, a.quick, ckpt, train, evals, cache) for s in seeds], a.last
        )
    prb = probe(base, a.quick, ckpt, train, nprobe, names, a.epochs, a.mini_batches) if nprobe else None
    ctrl = probe(base, a.quick, ckpt, train, max(1, min(nprobe, 2)), names, 1, 1) if nprobe else None
    gap = control_gap(ctrl) if ctrl and ctrl["batches"] else None
    ggap = max((v for vs in ctrl["grad_gap"].values() for v in vs), default=float("nan")) if ctrl else None
    control_ok = gap is not None and gap < 1e-3 and ggap is not None and ggap < 1e-3

    k = max(cfg.eval.ks)
    header = [
        "variant",
        f"held-out avg@{k} (final)",
        f"pass@{k} (final)",
        f"train acc (last {a.last})",
        f"operand-choice entropy (step 1 -> last {a.last}; primary)",
        f"result-digit entropy (last {a.last})",
        f"top-20% tokens that are choice / result (step 1 -> last {a.last})",
        f"entropy, all tokens (last {a.last})",
        f"top-20% entropy (last {a.last})",
        f"distinct correct paths (last {a.last})",
        "probe: entropy change",
        "probe: change - GRPO (95% CI)",
        "wall s / run",
    ]
    rows = []
    for n, r in results.items():
        rows.append(
            [
                n,
                _fmt(r["final"]["avg_at_k"]),
                _fmt(r["final"]["pass_at_k"]),
                _fmt(r["tail"]["accuracy"]),
                f"{_fmt(r['first']['entropy_choice'])} -> {_fmt(r['tail']['entropy_choice'])}",
                _fmt(r["tail"]["entropy_result"]),
                f"{_share(r['first'])} -> {_share(r['tail'])}",
                _fmt(r["tail"]["entropy"]),
                _fmt(r["tail"]["entropy_fork"]),
                _fmt(r["tail"]["paths"]),
                _ci(prb["mean_delta"][n]) if prb else "n/a",
                _ci(prb["paired"][n]) if prb else "n/a",
                round(r["wall"], 1),
            ]
        )
    table = common.md_table(header, rows)
    before = results[names[0]]
    start = (
        f"Start (SFT checkpoint, same for all; held-out numbers: mean of the seeds' evaluations, each with its own "
        f"sampling seed): held-out avg@{k} {before['avg_at_k'][0]:.3f}, pass@{k} "
        f"{before['pass_at_k'][0]:.3f}; probe batches' mean token entropy "
        f"{statistics.mean(prb['entropy_before']):.3f} nats."
        if prb and prb["entropy_before"]
        else ""
    )
    ctrl_txt = "On-policy control (1 epoch x 1 mini-batch, same batches and weights): " + (
        f"largest gradient gap to GRPO over all variants {ggap:.2e} of GRPO's largest gradient entry "
        f"(direct comparison, no clipping: a gradient off by 2x would give 1), largest entropy-change gap "
        f"{gap:.2e} of GRPO's change ({'coincide' if control_ok else 'DO NOT coincide'}); "
        + ", ".join(f"{n} {statistics.mean(ctrl['delta'][n]):+.5f}" for n in names)
        if gap is not None
        else "not run."
    )
    text = verdict(results, prb)
    if "ASPO-flip" in results:  # the flip alone (clips 0.2, no KL): is the ratio flip what does it?
        text += "\n\n" + verdict(results, prb, "ASPO-flip")
    settings = (
        f"{steps} RL steps x {len(seeds)} seeds {seeds} per variant, {batch} prompts x {cfg.rollout.n} samples "
        f"per step (dynamic sampling up to {cfg.rollout.max_gen_batches} rounds), {a.epochs} epochs x "
        f"{a.mini_batches} mini-batches per rollout batch, lr {cfg.optim.lr:g}, held-out eval every {every} steps "
        f"on {len(evals)} problems x {cfg.eval.n} samples; probe {nprobe} batches from the SFT weights "
        f"(fresh AdamW, no warm-up). Total wall {time.time() - t0:.0f} s."
    )
    print(table + "\n\n" + ctrl_txt + "\n\n" + text, flush=True)
    plot(
        results,
        prb,
        out_dir / "aspo_study.png",
        f"ASPO study on synthetic_paths: {steps} steps, {a.epochs}x{a.mini_batches}, seeds {seeds}"
        + (" (QUICK smoke)" if a.quick else ""),
    )
    cmd = " ".join(argv if argv is not None else sys.argv[1:])
    (out_dir / "aspo_study.md").write_text(
        f"# ASPO study (issue 13)\n\n`python benchmarks/aspo_study.py {cmd}`\n\n{start}\n\n{table}\n\n{ctrl_txt}\n\n"
        f"{text}\n\n![curves](aspo_study.png)\n\nSettings: {settings} "
        f"{'QUICK smoke mode (barely trained SFT model): not evidence. ' if a.quick else ''}{common.machine_note()}\n"
    )
    (out_dir / "aspo_study.json").write_text(
        json.dumps(
            {
                "settings": settings,
                "results": results,
                "probe": prb,
                "control": ctrl,
                "control_gap": gap,
                "control_grad_gap": ggap,
                "control_ok": control_ok,
                "verdict": text,
                "sft": sft_info,
            },
            indent=1,
            default=str,
        )
    )
    return 0 if (control_ok or gap is None) else 1


if __name__ == "__main__":
    raise SystemExit(main())
