"""Errors every layer may raise, so that no lower layer has to import ``archer.config`` for them."""


class ConfigError(ValueError):
    """A configuration problem; the message starts with the dotted name of the field."""
