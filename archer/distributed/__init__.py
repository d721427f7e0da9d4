"""Scale-out: Ray reward and rollout actors, torch.distributed training, sharded checkpoints, cluster CLI.

Modules (each imported on demand, so ``import archer.distributed`` costs nothing and never needs ray):

- :mod:`archer.rewards.ray_pool`  ``RayRewardScorer``: verifiers as Ray actors, fault tolerant
- :mod:`archer.rollout.ray_pool` ``RayRolloutPool``: engines as Ray actors, versioned weight sync
- :mod:`archer.distributed.world`        the training world: one process, or ddp / FSDP2 ranks
- :mod:`archer.distributed.launch`       ``resources.train_procs=N``: N local training processes, restarts;
  ``launch()`` picks the launcher (local or Ray) from the config
- :mod:`archer.distributed.ray_launch`   ``resources.nodes=N``: the training ranks as Ray actors on N nodes
- :mod:`archer.distributed.placement`    roles, node labels (``resources.placement``), where an actor runs
- :mod:`archer.distributed.health`       heartbeats, the watchdog, ``status.json`` (read by ``archer status``)
- :mod:`archer.distributed.checkpoint`   sharded save / load (any world size) via torch.distributed.checkpoint
- :mod:`archer.cli.export`       ``archer export CKPT_DIR --out DIR`` (one Hugging Face checkpoint)
- :mod:`archer.cli.cluster`      ``archer cluster start | join | status | stop``, NCCL environment
"""
