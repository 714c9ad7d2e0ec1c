"""What every launcher shares: quiet start-up, and user errors as one line instead of a traceback."""

import os
import sys

from absl import flags, logging

from cnn_zoo.data import sources

flags.DEFINE_bool('debug', False, 'Show the full traceback of an error.')

# User errors: a wrong config value, bad data, an input too small for a model.
USER_ERRORS = (ValueError, sources.DataError, FileNotFoundError)


def run(fn, *args, **kwargs):
  """Calls fn; a user error exits with status 2 and one line on stderr (all of it with --debug)."""
  try:
    return fn(*args, **kwargs)
  except USER_ERRORS as e:
    if flags.FLAGS.debug:
      raise
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    print(f'error: {message}', file=sys.stderr)
    logging.flush()
    sys.exit(2)


os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


class _QuietLibraries:
  """Keeps the console to cnn_zoo's own progress: other libraries' INFO lines are dropped."""

  def filter(self, record) -> bool:
    return record.levelno > 20 or 'cnn_zoo' in record.pathname or 'experiments' in record.pathname


logging.get_absl_handler().addFilter(_QuietLibraries())
