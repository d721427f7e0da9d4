"""The state of one RL run (:class:`RLRun`): what a step reads and advances, and what a checkpoint holds.

The policy is wrapped for log-probs (:class:`archer.rl.update.TokenScorer`) and sharded by the world's
strategy; the rollout engine generates from the plain model inside ``world.full_weights``. Built by
:func:`archer.rl.loop.train` after the policy is loaded (fresh, resumed, every rank).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from archer.algo.regularizers import AdaptiveEntropyController
from archer.config import Config
from archer.data.curriculum import build_curriculum
from archer.distributed.world import World
from archer.models import checkpoint as ckpt
from archer.models.loader import COMPUTE_DTYPES, unwrap
from archer.rewards.scoring import build_run_scorer
from archer.rewards.types import Scorer, safe_score
from archer.rl.batch import PromptSampler
from archer.rl.potential import compute_potentials
from archer.rl.settings import lr_lambda, max_new_tokens_at, sampling_params
from archer.rl.setup import check_model_limits, encode_prompts, end_of_turn_notes
from archer.rl.update import TokenScorer


class RLRun:
    """State of one run: the policy and its scorers, the engine, optimizer, schedule, controller, data
    order and curriculum; saved and restored as a whole. The stages of a step are functions of
    :mod:`archer.rl.step` over it; :func:`archer.rl.loop.train` is the entry point.

    ``model`` is the policy as loaded (a Hugging Face model, or a PEFT model under LoRA); the trainer
    works on ``self.scorer`` (the policy wrapped for log-probs and sharded by the world's strategy) and
    the engine generates from the plain model inside ``world.full_weights``.
    """

    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        *,
        model: Any,
        tokenizer: Any,
        train_problems: list[Any],
        eval_problems: list[Any],
        scorer: Scorer | None = None,
        engine: Any = None,
        log: Callable[[str], None] = print,
        world: World | None = None,
        ref_model: Any = None,
    ) -> None:

        self.cfg, self.run_dir, self.log = cfg, run_dir, log
        self.world = world or World(next(model.parameters()).device)
        self.model, self.tokenizer = model, tokenizer
        self.train_problems, self.eval_problems = train_problems, eval_problems
        d = cfg.data
        end_of_turn_notes(cfg, tokenizer, log)
        self.train_ids = encode_prompts(train_problems, tokenizer, d.max_prompt_tokens, d.prompt_template)
        # evaluation prompts are encoded by the eval runner; encoding them here checks their length up front
        eval_ids = encode_prompts(eval_problems, tokenizer, d.max_prompt_tokens, d.prompt_template)
        check_model_limits(cfg, model, self.train_ids + (eval_ids if cfg.eval.enabled else []))
        # verifiers (local or Ray) + reward.function, weighted, + reward.model on this rank's device
        self.scorer = scorer or build_run_scorer(cfg, self.world.device)
        mp_dtype = getattr(torch, cfg.model.dtype)
        packed = cfg.trainer.pack_sequences
        self.token_scorer = self.world.shard(TokenScorer(model, pack_sequences=packed, log=log), mp_dtype)
        self.ref_scorer = None
        if ref_model is not None:
            for p in ref_model.parameters():
                p.requires_grad_(False)
            ref = TokenScorer(ref_model.eval(), pack_sequences=packed, log=log)
            self.ref_scorer = self.world.shard(ref, mp_dtype)
        if engine is None:  # rollout.engine (auto: vllm on CUDA when installed), on Ray workers when asked
            from archer.rollout import build_rollout

            with self.world.full_weights(self.token_scorer):  # a separate engine starts from these weights
                engine, self.cfg = build_rollout(
                    cfg, unwrap(model), tokenizer, device=self.world.device, log=log
                )
            cfg = self.cfg  # algo.tis_cap may now be rollout.default_tis_cap (an engine with its own weights)
            if cfg.trainer.mode == "one_step_off":  # the pool generates step t+1 while step t trains
                from archer.rollout.ray_pool import OneStepOffPolicy

                engine = OneStepOffPolicy(engine, self.predict_next_round)
        self.engine = engine
        self.step = 0
        from archer.rl.rounds import ROUND_SOURCES  # it imports the step's stages, which import this module

        self.rounds = ROUND_SOURCES[cfg.trainer.mode](self)  # async: may set run.cfg's algo.tis_cap
        cfg = self.cfg
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(
            [p for p in self.token_scorer.parameters() if p.requires_grad],
            lr=o.lr,
            betas=tuple(o.betas),
            eps=o.eps,
            weight_decay=o.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        self.controller = None
        if cfg.algo.entropy_target is not None:
            self.controller = AdaptiveEntropyController(
                target=cfg.algo.entropy_target, delta=cfg.algo.entropy_delta, c_max=cfg.algo.entropy_max_coef
            )
        self.sampler = PromptSampler(
            len(train_problems),
            seed=cfg.data.seed,
            shuffle=cfg.data.shuffle,
            remove_threshold=cfg.data.remove_solved_threshold,
            min_keep=cfg.rollout.batch_size,
        )

        # prompt stages that need the potential are set by prepare_curriculum, once the engine exists
        self.curriculum = (
            build_curriculum(cfg, train_problems) if cfg.data.curriculum != "potential" else None
        )
        self.policy_version = 0  # optimizer updates so far: the weights a rollout engine must hold
        self.update_gen = torch.Generator().manual_seed(cfg.trainer.seed)

    def precision(self) -> Any:
        """The compute-precision context of every forward (``model.dtype``; FSDP casts by itself)."""
        dtype = self.cfg.model.dtype
        return self.world.precision(None if dtype == "float32" else COMPUTE_DTYPES[dtype])

    def state_dict(self, with_optimizer: bool = True) -> dict[str, Any]:
        state = {
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "update_gen": self.update_gen.get_state(),
            "controller": self.controller.state_dict() if self.controller else None,
            "policy_version": self.policy_version,
        }
        state.update(self.rounds.state_dict(self))  # async: the data order with the rounds it owes
        if with_optimizer:
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        self.rounds.load_state_dict(state)
        self.update_gen.set_state(state["update_gen"])
        if self.controller is not None and state.get("controller"):
            self.controller.load_state_dict(state["controller"])
        self.step = int(state["step"])
        self.policy_version = int(state.get("policy_version", self.policy_version))  # older checkpoints: 0
        ckpt.set_rng_state(state["rng"])

    def save(self) -> Path:
        """A complete checkpoint of this step (collective under a process world)."""
        return ckpt.save_run_checkpoint(
            self.world,
            self.run_dir,
            self.step,
            self.model,
            self.token_scorer,
            self.optimizer,
            self.tokenizer,
            self.state_dict,
            keep_last=self.cfg.trainer.keep_last,
            merged=self.cfg.model.lora.save_merged,
        )

    def prepare_curriculum(self, potential: list[float] | None) -> None:
        """The run's curriculum (:mod:`archer.data.curriculum`) with the prompts' potentials."""

        self.curriculum = build_curriculum(self.cfg, self.train_problems, potential)

    def compute_potential(self) -> tuple[list[float], dict[str, list[float]]]:
        """Each training prompt's improvement potential under the current policy (R1-CI; see
        :mod:`archer.rl.potential`), and the pass rates of each sampling mode."""

        d, cfg = self.cfg.data, self.cfg
        with self.world.full_weights(self.token_scorer), self.precision(), torch.no_grad():
            return compute_potentials(
                self.engine,
                self.train_ids,
                self.train_problems,
                lambda responses, probs: safe_score(self.scorer, responses, probs),
                temperatures=d.potential_temperatures,
                samples=d.potential_samples,
                max_new_tokens=max_new_tokens_at(cfg, 0),
                seed=cfg.trainer.seed + 31,
                batch_size=max(cfg.rollout.batch_size, 16),
            )

    def stage(self, step: int) -> Any:
        """The curriculum state of ``step`` (response budget, prompt pool)."""
        if self.curriculum is None:
            raise RuntimeError("data.curriculum=potential: prepare_curriculum() was not called")
        return self.curriculum.at(step)

    def rollout_is_policy(self) -> bool:
        """The sampler's log-probs equal the trainer's recomputation (to float rounding) for rollouts of the
        current weights: the engine samples from this float32 policy, or from an exact copy of it (async
        mode), at the training temperature (``trainer.reuse_rollout_logprobs``). Whether a batch's rollouts
        are of the current weights is :func:`archer.rl.step.fresh`."""

        return (
            self.cfg.trainer.reuse_rollout_logprobs
            and self.rounds.samples_like_policy
            and self.cfg.model.dtype == "float32"
        )

    def predict_next_round(self, served: Any) -> tuple[list[list[int]], Any] | None:
        """What the next training round will most likely ask the engine for, so that the rollout
        workers can generate it while this step trains: the sampler's next draw (taken on a copy of its
        state) with the settings of round 0 of the next step. None when ``served`` (the sampling settings
        just served) are not a training round of this step (evaluation asks with its own seed)."""
        cfg, rank = self.cfg, self.world.rank
        rounds = cfg.rollout.max_gen_batches if cfg.rollout.dynamic_sampling else 1
        max_new = self.stage(self.step).max_new_tokens
        if served.seed not in {sampling_params(cfg, self.step, r, rank, max_new).seed for r in range(rounds)}:
            return None
        nxt = self.stage(self.step + 1)
        idx = copy.deepcopy(self.sampler).next(cfg.rollout.batch_size, nxt.pool)
        params = sampling_params(cfg, self.step + 1, 0, rank, nxt.max_new_tokens)
        return [self.train_ids[i] for i in self.world.mine(idx)], params
