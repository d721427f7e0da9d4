"""Reward models for code (AceCoder, Zeng et al. 2025, arXiv:2502.01718): a causal LM with a scalar
head trained with the Bradley-Terry loss on (chosen, rejected) program pairs built from test pass rates.

- :mod:`archer.rm.loss`: the Bradley-Terry loss and pairwise accuracy.
- :mod:`archer.rm.pairs`: AceCoder's pair rule and the sampling of programs with their pass rates.
- :mod:`archer.models.reward_model`: build, save (a ``*ForSequenceClassification`` with ``num_labels=1``, so
  ``AutoModelForSequenceClassification.from_pretrained(DIR)`` reloads it) and batch-score reward models.
- :mod:`archer.rm.train`: the training loop (full fine-tuning or LoRA) with held-out pairwise accuracy.
- :mod:`archer.rewards.reward_model`: ``reward.model`` in RL, alone or mixed with the rule reward, and the
  ``rm/*`` metrics that make reward hacking visible.
- :mod:`archer.rm.select`: best-of-n selection by a reward model (``archer eval --rm``).
- :mod:`archer.cli.rm`: ``archer rm pairs | train | score``.

Test synthesis (AceCoder's first stage) is ``archer data synth-tests`` (:mod:`archer.curation.synth_tests`).
"""
