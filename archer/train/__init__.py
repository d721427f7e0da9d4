"""Training loops: RL (``archer.train.rl``) and supervised fine-tuning (``archer.train.sft``).

Nothing is imported here eagerly, so ``import archer.train.<module>`` only pays for what it uses.
"""
