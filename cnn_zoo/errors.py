"""The errors a user can cause, kept free of heavy imports so every launcher can name them.

Launchers print a `UserError` as one line and exit with status 2 (`cli.run`); any other exception
is a bug and keeps its traceback. The subclasses also derive from the built-in type they replace
(ValueError, FileNotFoundError, OSError), so `except ValueError` around library calls still works.
"""


class UserError(Exception):
  """A mistake the user can fix, explained in one line: what was wrong, which value, what is valid."""


class ConfigError(UserError, ValueError):
  """A config value, flag or config file that cannot be used."""


class DataError(UserError, ValueError):
  """A dataset that cannot be loaded or does not fit the model, with the reason in one line."""


class WorkdirError(UserError, ValueError):
  """The workdir is busy, holds a different run, or its files cannot be read or written."""


class NotFoundError(UserError, FileNotFoundError):
  """A file or directory the user named does not exist."""


class StorageError(UserError, OSError):
  """A file the run writes cannot be written (read-only, not a directory, disk full)."""


class NonFiniteError(UserError, RuntimeError):
  """The loss or the gradients became NaN or Inf."""


class Stopped(Exception):
  """The run was stopped by a signal after saving its work; exits with 128 + the signal number."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum
    self.exit_code = 128 + signum


class NonFiniteConfigError(ConfigError):
  """A config number that is NaN, infinite or beyond float32: it can never be right."""
