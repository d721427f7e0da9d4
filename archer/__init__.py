"""archer: reinforcement learning with verifiable rewards for math and code reasoning.

Subpackages: ``archer.algo`` (losses, advantages, regularisers, chunked log-probs),
``archer.rewards`` (math verifier, code sandbox), ``archer.rollout`` (generation engines),
``archer.data`` (datasets, filters, synthetic tasks), ``archer.rl`` (RL and SFT loops),
``archer.eval`` (pass@k, avg@k, evaluation runner), ``archer.distributed`` (Ray, torch.distributed).
"""

__version__ = "0.1.0"
