"""Errors every layer may raise, so that no lower layer has to import ``archer.config`` for them."""


class ConfigError(ValueError):
    """A configuration problem; the message starts with the dotted name of the field."""


class RewardFunctionError(ValueError):
    """A user's reward function (``reward.function(s)``) raised or returned something unusable; the message
    has the function's own traceback and the offending sample. Scorers let it through (it ends the run)
    unless ``reward.on_error=zero``."""


class RankFailure(RuntimeError):
    """A training process died (a signal, a non-zero exit), hung (the watchdog ended it) or raised; the
    message is one line naming the rank, how it ended and the stage it was in."""
