"""The errors a user can cause: each carries one sentence that names the cause and the fix.

The command line prints the message alone and exits with status 2; the Python API raises them.
"""


class DistillsetError(Exception):
    """Base class: bad input that the user can correct."""


class ConfigError(DistillsetError):
    """An invalid configuration key or value."""


class DataError(DistillsetError):
    """A dataset that is missing, corrupt or of the wrong format."""


class StoreError(DistillsetError):
    """A trajectory store, checkpoint or artifact that is missing, corrupt or made for another setting."""
