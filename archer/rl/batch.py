"""Batch plumbing for the RL loop: data order, dynamic sampling, packing, micro-batches.

- :class:`PromptSampler` walks the training prompts epoch by epoch in a seeded permutation; its state
  (epoch, position, removed prompts) is saved in checkpoints so a resumed run sees the same order.
  Online easy-prompt removal (Skywork-OR1 / AceReason) drops a prompt once a group reaches
  ``remove_threshold`` accuracy; it is never sampled again (at least one batch worth is kept).
- :func:`collect_groups` is DAPO's dynamic sampling (Yu et al. 2025, arXiv 2503.14476): generate
  rounds of groups, keep those whose rewards are not all equal, stop when ``target`` groups are kept
  or after ``max_rounds``; then train on what there is (possibly nothing) and report it. Never raises.
- :func:`pack` right-pads prompt+response sequences into ``[B, T]`` tensors with the response mask.
- :func:`micro_batches` cuts a mini-batch into token-balanced micro-batches whose real (unpadded)
  token count stays under a budget, for gradient accumulation; :func:`balanced_split` balances groups
  across ranks by tokens.
- :class:`Round` is one generation round of a step; :func:`build_batch` computes group advantages
  and packs the kept groups into a frozen :class:`TrainBatch`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from archer.algo.advantages import compute_advantages


@dataclass
class Group:
    """The ``n`` responses to one prompt, with their shaped rewards and verdicts."""

    prompt_index: int
    prompt_ids: list[int]
    responses: list[Any]  # archer.rollout.base.Rollout
    rewards: list[float]
    correct: list[bool]
    infos: list[dict] = field(default_factory=list)

    @property
    def has_signal(self) -> bool:
        return len(self.rewards) > 1 and max(self.rewards) != min(self.rewards)

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / max(len(self.correct), 1)


class PromptSampler:
    """Seeded epoch permutations over ``num_prompts`` indices with online removal of solved prompts."""

    def __init__(
        self,
        num_prompts: int,
        seed: int = 0,
        shuffle: bool = True,
        remove_threshold: float | None = None,
        min_keep: int = 1,
    ) -> None:
        if num_prompts < 1:
            raise ValueError("PromptSampler needs at least one prompt")
        self.num_prompts = num_prompts
        self.seed = seed
        self.shuffle = shuffle
        self.remove_threshold = remove_threshold
        self.min_keep = min_keep
        self.epoch = 0
        self.position = 0
        self.removed: set[int] = set()

    def _order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.num_prompts))
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.num_prompts, generator=g).tolist()

    def next(self, count: int, pool: frozenset[int] | set[int] | None = None) -> list[int]:
        """The next ``count`` live prompt indices, crossing epoch boundaries as needed. ``pool``: draw
        only these indices (a curriculum stage); the others are skipped in the same seeded order."""
        out: list[int] = []
        guard = 0
        while len(out) < count:
            order = self._order(self.epoch)
            while self.position < len(order) and len(out) < count:
                idx = order[self.position]
                self.position += 1
                if idx not in self.removed and (pool is None or idx in pool):
                    out.append(idx)
            if self.position >= len(order):
                self.epoch += 1
                self.position = 0
                guard += 1
                if guard > 2 and not out:  # everything removed: cannot happen with min_keep >= 1
                    raise RuntimeError("PromptSampler: no live prompts left")
        return out

    def observe(self, prompt_index: int, accuracy: float) -> bool:
        """Record a group's accuracy; returns True when the prompt was removed as solved."""
        if self.remove_threshold is None or accuracy < self.remove_threshold:
            return False
        if self.num_prompts - len(self.removed) <= self.min_keep:
            return False
        self.removed.add(prompt_index)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "removed": sorted(self.removed),
            "seed": self.seed,
            "num_prompts": self.num_prompts,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("num_prompts", self.num_prompts) != self.num_prompts:
            raise ValueError(
                f"checkpoint data order is for {state['num_prompts']} prompts, "
                f"this run has {self.num_prompts}"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.removed = set(state.get("removed", []))


@dataclass
class CollectStats:
    rounds: int = 0
    generated_groups: int = 0
    kept_groups: int = 0
    zero_variance_groups: int = 0
    short: bool = False  # fewer than target groups after max_rounds (trained on what there was)


def collect_groups(
    generate_round: Callable[[int], list[Group]],
    target: int,
    max_rounds: int,
    filter_zero_variance: bool = True,
) -> tuple[list[Group], CollectStats]:
    """DAPO dynamic sampling. ``generate_round(round_index)`` returns freshly scored groups.

    Without filtering, one round is generated and all its groups are kept. With filtering, rounds
    continue until ``target`` groups with reward variance are kept or ``max_rounds`` were generated;
    extra groups beyond ``target`` are dropped. A short result is flagged, never an error.
    """
    stats = CollectStats()
    kept: list[Group] = []
    for round_index in range(max(1, max_rounds) if filter_zero_variance else 1):
        groups = generate_round(round_index)
        stats.rounds += 1
        stats.generated_groups += len(groups)
        for g in groups:
            if filter_zero_variance and not g.has_signal:
                stats.zero_variance_groups += 1
            else:
                kept.append(g)
        if len(kept) >= target:
            break
    kept = kept[:target]
    stats.kept_groups = len(kept)
    stats.short = len(kept) < target
    return kept, stats


def pack(sequences: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad (prompt_ids, response_ids) pairs.

    Returns ``input_ids`` [B, T], ``attention_mask`` [B, T] and ``response_mask`` [B, T] (1 on
    response tokens; position t's log-prob is read from the hidden state at t-1).
    """
    lengths = [len(p) + len(r) for p, r in sequences]
    T = max(lengths)
    B = len(sequences)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    attention = torch.zeros(B, T, dtype=torch.long)
    resp = torch.zeros(B, T, dtype=torch.float32)
    for i, (p, r) in enumerate(sequences):
        seq = list(p) + list(r)
        input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[i, : len(seq)] = 1
        resp[i, len(p) : len(seq)] = 1.0
    return {"input_ids": input_ids, "attention_mask": attention, "response_mask": resp}


def micro_batches(lengths: list[int], token_budget: int, packed: bool = False) -> list[list[int]]:
    """Token-balanced micro-batches: row indices cut into few groups whose **real** token sums
    (``lengths``: prompt + response tokens of each row, no padding) stay within ``token_budget``, with
    near-equal sums (like verl's ``use_dynamic_bsz``). A row longer than the budget goes alone.

    - ``packed`` (rows run without padding, ``trainer.pack_sequences``): bin packing. The rows are
      spread over ``k`` bins, ``k`` growing from ``ceil(total / budget)``: longest row first into the
      lightest bin it fits (greedy LPT, within 4/3 of the best balance); the first ``k`` where every
      row fits wins. First-fit decreasing bounds ``k`` (within 11/9 of the fewest bins): when LPT needs
      more, FFD's less balanced bins are taken.
    - padded rows (the default): a padded forward costs ``len(bin) * max_len(bin)``, so rows of
      similar length go together: the rows sorted by length are cut into the fewest contiguous runs
      within the budget (greedy), and among those cuts the one with the smallest heaviest run (binary
      search on the cap), so the runs are as even as contiguous runs can be. Its padded positions can
      still exceed the budget (short rows behind a longer one).

    Limits: neither the fewest bins (NP-hard) nor the best balance is guaranteed. Bins come out heaviest
    first, each bin's rows in increasing index; ties go to the lower index (deterministic).
    """
    alone = [[i] for i in range(len(lengths)) if lengths[i] > token_budget]
    rest = sorted(
        (i for i in range(len(lengths)) if lengths[i] <= token_budget), key=lambda i: (-lengths[i], i)
    )
    if not packed:
        bins = _contiguous_runs(lengths, rest, token_budget)
    else:
        bins = _first_fit_decreasing(lengths, rest, token_budget)
        for k in range(max(1, math.ceil(sum(lengths[i] for i in rest) / token_budget)), len(bins) + 1):
            lpt = _lightest_fit(lengths, rest, token_budget, k)
            if lpt is not None:
                bins = lpt
                break
    out = alone + [sorted(b) for b in bins if b]
    return sorted(out, key=lambda m: (-sum(lengths[i] for i in m), m))


def _contiguous_runs(lengths: list[int], order: list[int], budget: int) -> list[list[int]]:
    """``order`` cut into the fewest runs of at most ``budget`` tokens, with the smallest heaviest run."""

    def cut(cap: int) -> list[list[int]]:
        runs: list[list[int]] = []
        total = cap + 1
        for i in order:
            if total + lengths[i] > cap:
                runs.append([])
                total = 0
            runs[-1].append(i)
            total += lengths[i]
        return runs

    fewest = len(cut(budget))
    lo, hi = max((lengths[i] for i in order), default=0), budget
    while lo < hi:  # the smallest cap that still needs no more runs
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if len(cut(mid)) <= fewest else (mid + 1, hi)
    return cut(hi)


def _lightest_fit(lengths: list[int], order: list[int], budget: int, k: int) -> list[list[int]] | None:
    """Rows of ``order`` onto ``k`` bins, each onto the lightest bin it fits; None when one fits nowhere."""
    bins: list[list[int]] = [[] for _ in range(k)]
    sums = [0] * k
    for i in order:
        fits = [b for b in range(k) if sums[b] + lengths[i] <= budget]
        if not fits:
            return None
        b = min(fits, key=lambda b: (sums[b], b))
        bins[b].append(i)
        sums[b] += lengths[i]
    return bins


def fill_rows(lengths: list[int], width: int) -> list[list[int]]:
    """Row indices placed into as few packed rows of ``width`` tokens as first-fit decreasing finds (within
    11/9 of the fewest): longest first, each into the first packed row with room. A row longer than
    ``width`` gets a packed row of its own (the caller widens to the longest row)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return _first_fit_decreasing(lengths, order, max(width, max(lengths, default=0)))


def _first_fit_decreasing(lengths: list[int], order: list[int], budget: int) -> list[list[int]]:
    """Rows of ``order`` (longest first) each into the first bin it fits, a new bin when none."""
    bins: list[list[int]] = []
    sums: list[int] = []
    for i in order:
        b = next((b for b in range(len(bins)) if sums[b] + lengths[i] <= budget), len(bins))
        if b == len(bins):
            bins.append([])
            sums.append(0)
        bins[b].append(i)
        sums[b] += lengths[i]
    return bins


def padded_micro_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    """The former split (before token balancing): greedy over rows in order of decreasing length so that
    ``len(micro) * max_len(micro) <= token_budget`` (padded tokens); a row longer than the budget goes
    alone. Kept for comparison (``benchmarks/packed_update.py``); the trainer uses :func:`micro_batches`."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i in order:
        new_max = max(cur_max, lengths[i])
        if cur and (len(cur) + 1) * new_max > token_budget:
            out.append(cur)
            cur, new_max = [], lengths[i]
        cur.append(i)
        cur_max = new_max
    if cur:
        out.append(cur)
    return out


def balanced_split(weights: list[int], parts: int) -> list[list[int]]:
    """Indices of ``weights`` split into ``parts`` lists with near-equal weight sums (greedy LPT: heaviest
    first onto the lightest part; ties to the lower index and part), each list in increasing index.
    With ``parts`` >= 2 and at least ``parts`` items, no part is empty."""
    bins: list[list[int]] = [[] for _ in range(max(1, parts))]
    sums = [0] * len(bins)
    for i in sorted(range(len(weights)), key=lambda i: (-weights[i], i)):
        b = min(range(len(bins)), key=lambda b: (sums[b], len(bins[b]), b))
        bins[b].append(i)
        sums[b] += weights[i]
    return [sorted(b) for b in bins]


def split_mini_batches(num_rows: int, num_mini: int, generator: torch.Generator) -> list[list[int]]:
    """Shuffle rows and split into ``num_mini`` nearly equal mini-batches (fewer if rows are few)."""
    perm = torch.randperm(num_rows, generator=generator).tolist()
    k = max(1, min(num_mini, num_rows))
    size, extra = divmod(num_rows, k)
    out, start = [], 0
    for j in range(k):
        end = start + size + (1 if j < extra else 0)
        out.append(perm[start:end])
        start = end
    return [m for m in out if m]


@dataclass
class Round:
    """One generation round of a step: the scored groups (global prompt order) and its costs."""

    prompts: list[int]  # global prompt indices drawn for this round
    groups: list[Group]
    seconds_generate: float = 0.0
    seconds_reward: float = 0.0
    failure_reasons: Counter = field(default_factory=Counter)


@dataclass(frozen=True)
class TrainBatch:
    """The kept groups of a step packed for training (row ``i`` is response ``i % n`` of group ``i // n``).

    Frozen: the stage that adds the old and reference log-probs returns a new batch
    (:func:`dataclasses.replace`), so what the update reads is what that stage produced."""

    input_ids: torch.Tensor  # [B, T] prompt + response, right-padded
    attention_mask: torch.Tensor  # [B, T]
    response_mask: torch.Tensor  # [B, T] 1 on trained response tokens (t is predicted from t-1)
    rewards: torch.Tensor  # [B] shaped rewards
    advantages: torch.Tensor  # [B]
    lengths: list[int]  # [B] prompt + response tokens
    prompt_len: torch.Tensor  # [B] prompt tokens of each row
    group: torch.Tensor  # [B] the row's group: rows of a group share their prompt (one forward for it)
    rollout_log_prob: torch.Tensor  # [B, T] the sampler's log-probs (0 off the response)
    old_log_prob: torch.Tensor | None = None  # [B, T] the sampling policy's, recomputed or reused
    ref_log_prob: torch.Tensor | None = None  # [B, T] the KL reference's
    token_version: torch.Tensor | None = None  # [B, T] long: the policy version that sampled each response
    # token (-1 off the response); None when the rollouts carry no versions (sync runs)

    def tensors(self, with_rollout: bool) -> dict[str, torch.Tensor]:
        """The dict :func:`archer.rl.update.update_minibatch` slices."""
        out = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "response_mask": self.response_mask,
            "rewards": self.rewards,
            "advantages": self.advantages,
            "prompt_len": self.prompt_len,
            "group": self.group,
        }
        for name in ("old_log_prob", "ref_log_prob") + (("rollout_log_prob",) if with_rollout else ()):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


def build_batch(cfg: Any, groups: list[Group], pad_id: int, device: torch.device) -> TrainBatch:
    """Group advantages (``algo.advantage``) and the packed rows of the kept groups."""

    rewards = torch.tensor([g.rewards for g in groups], dtype=torch.float32)  # [G, n]
    adv = compute_advantages(cfg.algo.advantage, rewards)  # [G, n]
    rollouts = [ro for g in groups for ro in g.responses]
    rows = [(g.prompt_ids, ro.response_ids) for g in groups for ro in g.responses]
    packed = pack(rows, pad_id)
    for i, ro in enumerate(rollouts):  # tool rollouts: observation tokens are context, never trained
        loss_mask = (getattr(ro, "meta", None) or {}).get("loss_mask")
        if loss_mask is not None:
            start = len(rows[i][0])
            keep = torch.tensor(loss_mask, dtype=packed["response_mask"].dtype)  # [R_i]
            packed["response_mask"][i, start : start + len(keep)] *= keep
    if cfg.algo.mask_truncated:  # overlong filtering: truncated responses do not train
        packed["response_mask"][torch.tensor([ro.truncated for ro in rollouts], dtype=torch.bool)] = 0.0
    sampler = torch.zeros_like(packed["response_mask"])  # [B, T]
    for i, ro in enumerate(rollouts):
        start = len(rows[i][0])
        sampler[i, start : start + len(ro.logprobs)] = torch.tensor(ro.logprobs, dtype=sampler.dtype)
    metas = [getattr(ro, "meta", None) or {} for ro in rollouts]
    version = None
    if rollouts and all("token_versions" in m for m in metas):  # async rollouts (archer.rl.async_rollout)
        version = torch.full(packed["input_ids"].shape, -1, dtype=torch.long)  # [B, T]
        for i, m in enumerate(metas):
            start = len(rows[i][0])
            version[i, start : start + len(m["token_versions"])] = torch.tensor(m["token_versions"])
        version = version.to(device)
    weights = [float(m.get("advantage_weight", 1.0)) for m in metas]
    if any(w != 1.0 for w in weights):  # stale samples kept with a smaller weight (trainer.stale_policy)
        adv = adv * torch.tensor(weights, dtype=adv.dtype).reshape(adv.shape)
    return TrainBatch(
        input_ids=packed["input_ids"].to(device),
        attention_mask=packed["attention_mask"].to(device),
        response_mask=packed["response_mask"].to(device),
        rewards=rewards.reshape(-1).to(device),
        advantages=adv.reshape(-1).to(device),
        lengths=[len(p) + len(r) for p, r in rows],
        prompt_len=torch.tensor([len(p) for p, _ in rows], device=device),
        group=torch.tensor([gi for gi, g in enumerate(groups) for _ in g.responses], device=device),
        rollout_log_prob=sampler.to(device),
        token_version=version,
    )


def group_rows(groups: list[Group], owned: list[int]) -> list[int]:
    """Row indices (in the packed batch of all groups) of the groups in ``owned``."""
    starts = [0]
    for g in groups:
        starts.append(starts[-1] + len(g.responses))
    return [i for gi in owned for i in range(starts[gi], starts[gi + 1])]
