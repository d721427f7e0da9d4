"""Reward-model training: the Bradley-Terry loss (:mod:`archer.rm.loss`) over (chosen, rejected) pairs.

Each step takes ``batch_size`` pairs, scores the chosen and rejected texts in one forward ([2P] rows),
and minimises ``mean -log sigmoid(r_c - r_r)`` with AdamW. Held-out pairs (``eval_pairs``, or a
``eval_fraction`` of the problems: pairs are split by problem id, so no held-out problem is seen in
training) give the pairwise accuracy after every epoch. Progress goes to ``log`` every ``log_every``
steps. The checkpoint is written once, at the end, atomically (:func:`archer.models.reward_model.save_reward_model`).

Limits: no resumption inside a run (a crash restarts from ``--model``); one device; no gradient
accumulation beyond ``batch_size``.
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from archer.models.reward_model import encode, forward_scores, init_reward_model, rm_input, save_reward_model
from archer.rm.loss import bradley_terry_loss, pairwise_accuracy


@dataclass
class RMTrainConfig:
    epochs: int = 1
    lr: float = 1e-5
    batch_size: int = 8
    max_length: int = 1024
    lora_rank: int = 0
    lora_alpha: float = 16.0
    weight_decay: float = 0.0
    eval_fraction: float = 0.0
    seed: int = 0
    log_every: int = 10
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.max_length < 8:
            raise ValueError("epochs and batch_size must be >= 1 and max_length >= 8")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0, got {self.lora_rank}")


def check_pairs(rows: Sequence[dict[str, Any]], source: str = "pairs") -> list[dict[str, Any]]:
    """Rows with ``prompt``, ``chosen``, ``rejected`` (strings; ``prompt`` may be a chat list)."""
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{source}: row {i} is not a JSON object")
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
        if missing:
            raise ValueError(f"{source}: row {i} is missing {missing}")
        if not isinstance(row["chosen"], str) or not isinstance(row["rejected"], str):
            raise ValueError(f"{source}: row {i}: 'chosen' and 'rejected' must be strings")
        if not isinstance(row["prompt"], (str, list)):
            raise ValueError(f"{source}: row {i}: 'prompt' must be a string or a chat list")
    if not rows:
        raise ValueError(f"{source}: no pairs")
    return list(rows)


def split_by_problem(rows: list[dict[str, Any]], fraction: float) -> tuple[list[dict], list[dict]]:
    """(train, held-out): a problem's pairs all go one way, chosen by a hash of its id (or prompt)."""
    if fraction <= 0:
        return rows, []

    def held(row: dict[str, Any]) -> bool:
        key = str(row.get("id", row["prompt"]))
        return zlib.crc32(key.encode()) % 10_000 < fraction * 10_000

    train = [r for r in rows if not held(r)]
    heldout = [r for r in rows if held(r)]
    return train, heldout


def _scores(model: Any, tok: Any, rows: Sequence[dict], cfg: RMTrainConfig, device: Any) -> torch.Tensor:
    texts = [rm_input(tok, r["prompt"], r["chosen"]) for r in rows] + [
        rm_input(tok, r["prompt"], r["rejected"]) for r in rows
    ]
    return forward_scores(model, encode(tok, texts, cfg.max_length, device))  # [2P]


@torch.no_grad()
def evaluate_pairs(
    model: Any, tok: Any, rows: Sequence[dict], cfg: RMTrainConfig, device: Any
) -> dict[str, float]:
    """Held-out pairwise accuracy and Bradley-Terry loss."""
    model.eval()
    chosen, rejected = [], []
    for lo in range(0, len(rows), cfg.batch_size):
        chunk = rows[lo : lo + cfg.batch_size]
        s = _scores(model, tok, chunk, cfg, device)  # [2P]
        chosen.append(s[: len(chunk)])
        rejected.append(s[len(chunk) :])
    if not chosen:
        return {}
    c, r = torch.cat(chosen), torch.cat(rejected)  # [P], [P]
    return {"accuracy": pairwise_accuracy(c, r), "loss": float(bradley_terry_loss(c, r)), "pairs": len(rows)}


def train_reward_model(
    rows: list[dict[str, Any]],
    model_path: str | Path,
    out: str | Path,
    cfg: RMTrainConfig | None = None,
    *,
    eval_rows: list[dict[str, Any]] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train on ``rows`` from ``model_path``, save to ``out``; returns the metrics (also in archer_rm.json)."""
    cfg = cfg or RMTrainConfig()
    rows = check_pairs(rows, "--data")
    if eval_rows is None:
        rows, eval_rows = split_by_problem(rows, cfg.eval_fraction)
        if not rows:
            raise ValueError(f"--eval-fraction {cfg.eval_fraction} left no training pairs")
    else:
        eval_rows = check_pairs(eval_rows, "--eval-data")
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model, tok = init_reward_model(model_path, lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = random.Random(cfg.seed)
    steps_per_epoch = (len(rows) + cfg.batch_size - 1) // cfg.batch_size
    total, step, t0 = steps_per_epoch * cfg.epochs, 0, time.time()
    history: list[dict[str, Any]] = []
    log(
        f"archer rm train: {len(rows)} pairs ({len(eval_rows)} held out), {cfg.epochs} epoch(s), {total} steps"
    )
    for epoch in range(cfg.epochs):
        order = list(range(len(rows)))
        rng.shuffle(order)
        run_loss, run_acc, seen = 0.0, 0.0, 0
        for lo in range(0, len(order), cfg.batch_size):
            model.train()
            chunk = [rows[i] for i in order[lo : lo + cfg.batch_size]]
            s = _scores(model, tok, chunk, cfg, device)  # [2P]
            r_c, r_r = s[: len(chunk)], s[len(chunk) :]  # [P], [P]
            loss = bradley_terry_loss(r_c, r_r)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            run_loss += loss.detach().item() * len(chunk)
            run_acc += pairwise_accuracy(r_c.detach(), r_r.detach()) * len(chunk)
            seen += len(chunk)
            if step % cfg.log_every == 0 or step == total:
                eta = (time.time() - t0) / step * (total - step)
                log(
                    f"  step {step}/{total}  loss {run_loss / seen:.4f}  train acc {run_acc / seen:.3f}  eta {eta:.0f}s"
                )
        entry: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": run_loss / max(seen, 1),
            "train_accuracy": run_acc / max(seen, 1),
        }
        if eval_rows:
            ev = evaluate_pairs(model, tok, eval_rows, cfg, device)
            entry.update({"heldout_accuracy": ev["accuracy"], "heldout_loss": ev["loss"]})
            log(
                f"  epoch {epoch + 1}: held-out pairwise accuracy {ev['accuracy']:.3f} on {len(eval_rows)} pairs"
            )
        history.append(entry)
    metrics = {
        "train_pairs": len(rows),
        "heldout_pairs": len(eval_rows),
        "history": history,
        "config": asdict(cfg),
        "base_model": str(model_path),
        "seconds": round(time.time() - t0, 1),
        **({k: history[-1][k] for k in ("heldout_accuracy", "heldout_loss")} if eval_rows else {}),
    }
    save_reward_model(model.cpu(), tok, out, metrics)
    log(f"reward model saved to {out}")
    return metrics
