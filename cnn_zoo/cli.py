"""What every launcher shares: quiet start-up, and user errors as one line instead of a traceback."""

import sys

from absl import flags, logging

from cnn_zoo import errors

flags.DEFINE_bool('debug', False, 'Show the full traceback of an error.')

# User errors: a wrong config value, bad data, an input too small for a model, a busy workdir;
# and a run stopped by a NaN, which the message explains.
USER_ERRORS = (ValueError, errors.DataError, FileNotFoundError, errors.NonFiniteError)


def _one_line(e: BaseException) -> str:
  if isinstance(e, (KeyError, AttributeError)) and e.args:
    # ml_collections reports an unknown field as KeyError("'name'\nDid you mean ...").
    text = str(e.args[0]).encode().decode('unicode_escape').strip()
    if len(text) > 1 and text[0] == text[-1] == "'":
      text = text[1:-1]
    lines = text.splitlines()
    hint = f' ({lines[1].strip()})' if len(lines) > 1 else ''
    return f'unknown config field {lines[0].strip()}{hint}'
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__


def parse_flags(argv):
  """absl's flag parsing, with a bad flag or config override reported in one line (app.run's
  flags_parser)."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, KeyError, AttributeError, TypeError, ValueError) as e:
    print(f'error: {_one_line(e)}', file=sys.stderr)
    sys.exit(2)


def run(fn, *args, **kwargs):
  """Calls fn; a user error exits with status 2 and one line on stderr (all of it with --debug)."""
  try:
    return fn(*args, **kwargs)
  except USER_ERRORS as e:
    if flags.FLAGS.is_parsed() and flags.FLAGS.debug:
      raise
    print(f'error: {_one_line(e)}', file=sys.stderr)
    logging.flush()
    sys.exit(2)



class _QuietLibraries:
  """Keeps the console to cnn_zoo's own progress: other libraries' INFO lines are dropped."""

  def filter(self, record) -> bool:
    return record.levelno > 20 or 'cnn_zoo' in record.pathname or 'experiments' in record.pathname


logging.get_absl_handler().addFilter(_QuietLibraries())
