"""Errors every layer may raise, so that no lower layer has to import ``archer.config`` for them."""


class ConfigError(ValueError):
    """A configuration problem; the message starts with the dotted name of the field."""


class RewardFunctionError(ValueError):
    """A user's reward function (``reward.function(s)``) raised or returned something unusable; the message
    has the function's own traceback and the offending sample. Scorers let it through (it ends the run)
    unless ``reward.on_error=zero``."""
