"""The errors a user can cause, kept free of heavy imports so every launcher can name them."""


class DataError(ValueError):
  """A dataset that cannot be loaded, with the reason in one line."""


class NonFiniteError(RuntimeError):
  """The loss or the gradients became NaN or Inf."""
