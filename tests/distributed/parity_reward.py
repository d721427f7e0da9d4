"""A reward by file path (``reward.function=tests/distributed/parity_reward.py:parity``) for runs whose ranks
are Ray actors: a monkeypatched verifier does not reach other processes, a file path does. Reward 1 for
a response of even length (``helpers.parity_verifier``'s rule), so every group carries signal."""


def parity(completions, **_):
    return [float(len(c) % 2 == 0) for c in completions]
