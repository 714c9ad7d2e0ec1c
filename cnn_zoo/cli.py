"""What every launcher shares: quiet start-up, user errors as one line instead of a traceback, and
a run stopped by a signal as one line and exit status 128 + the signal number."""

import difflib
import logging as std_logging
import os
import signal
import sys

from absl import flags, logging

from cnn_zoo import errors, outputs

flags.DEFINE_bool('debug', False, 'Show the full traceback of an error.')

# User errors: a wrong config value, bad data, an input too small for a model, a busy or unwritable
# workdir; and a run stopped by a NaN, which the message explains. Anything else is a bug: traceback.
USER_ERRORS = (errors.UserError,)


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


# Set by a sweep in each point's environment (sweep.STOP_WITH): the sweep's process id.
STOP_WITH = 'CNN_ZOO_STOP_WITH_PID'
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Linux sends the parent-death signal once per thread that inherited it: it arrives as this one,
# turned into a single SIGTERM (a second SIGTERM would stop the run without its checkpoint).
_PARENT_DIED = signal.SIGUSR2


def _on_parent_death(signum, frame):
  del frame
  signal.signal(signum, signal.SIG_IGN)
  os.kill(os.getpid(), signal.SIGTERM)


def stop_with_parent() -> bool:
  """A launcher started by a sweep asks Linux to tell it when the sweep dies, by any signal
  (SIGKILL, the OOM killer): it then gets SIGTERM once, saves a checkpoint and stops instead of
  training on as an orphan. Only the sweep's direct child does (a process further down, e.g.
  under srun, does not); True if it did."""
  expected = os.environ.pop(STOP_WITH, '')  # not inherited by this process's own children
  if not expected or expected != str(os.getppid()) or not sys.platform.startswith('linux'):
    return False
  import ctypes  # pylint: disable=import-outside-toplevel
  previous = signal.signal(_PARENT_DIED, _on_parent_death)
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(_PARENT_DIED), 0, 0, 0) != 0:
      raise OSError(ctypes.get_errno(), 'prctl')
  except (OSError, AttributeError):
    signal.signal(_PARENT_DIED, previous)
    return False
  if str(os.getppid()) != expected:  # the sweep died before prctl took effect
    os.kill(os.getpid(), signal.SIGTERM)
  return True


def parse_flags(argv):
  """absl's flag parsing, with a bad flag or config override reported in one line (app.run's
  flags_parser); installs the console filters. A launcher started by a sweep stops with it."""
  quiet_logging()
  stop_with_parent()
  try:
    argv = flags.FLAGS(argv)
  except (flags.Error, KeyError, AttributeError, TypeError, ValueError) as e:
    print(f'error: {_config_file_error(e) or _one_line(e)}', file=sys.stderr)
    sys.exit(2)
  missing = _missing_config_file()
  if missing:
    print(f'error: {missing}', file=sys.stderr)
    sys.exit(2)
  return argv


def _config_file_error(e: BaseException) -> str:
  """`--config=FILE:ARG` whose get_config raised: the flag and its reason, not the traceback."""
  text = str(e)
  if 'Error whilst parsing config file' not in text:
    return ''
  flag = text.split(': Error whilst parsing config file', 1)[0].removeprefix('flag ')
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  reason = lines[-1]
  for prefix in ('ValueError: ', 'TypeError: ', 'cnn_zoo.errors.ConfigError: '):
    reason = reason.removeprefix(prefix)
  return f'{flag}: {reason}'


def _missing_config_file() -> str:
  """A config file flag whose file could not be loaded (ml_collections defers that error)."""
  for name in flags.FLAGS:
    flag = flags.FLAGS[name]
    if type(flag.parser).__name__ != 'ConfigFileFlagParser' or flag.value is None:
      continue
    try:
      getattr(flag.value, 'keys')
    except OSError:
      path = getattr(flag, 'config_filename', '').split(':', 1)[0]
      return f'--{name}={path}: no such config file{_closest_files(path)}'
  return ''


def _closest_files(path: str) -> str:
  folder = os.path.dirname(path) or '.'
  try:
    files = sorted(f for f in os.listdir(folder) if f.endswith('.py') and not f.startswith('_'))
  except OSError:
    return f' (no folder {folder})'
  close = difflib.get_close_matches(os.path.basename(path), files, n=3, cutoff=0.5)
  shown = close or files
  label = 'did you mean' if close else 'config files there'
  return f' ({label}: {", ".join(os.path.join(folder, f) for f in shown)})' if shown else ''


def run(fn, *args, **kwargs):
  """Calls fn; a user error exits with status 2 and one line on stderr (all of it with --debug)."""
  quiet_logging()
  try:
    return fn(*args, **kwargs)
  except USER_ERRORS as e:
    if flags.FLAGS.is_parsed() and flags.FLAGS.debug:
      raise
    print(f'error: {_one_line(e)}', file=sys.stderr)
    logging.flush()
    sys.exit(2)
  except errors.Stopped as e:
    print(f'stopped: {e}', file=sys.stderr)
    logging.flush()
    sys.exit(e.exit_code)
  except KeyboardInterrupt:  # Ctrl-C before a run handles it, or a second one: stop at once
    if flags.FLAGS.is_parsed() and flags.FLAGS.debug:
      raise
    print('stopped: SIGINT, at once; what was saved before is kept', file=sys.stderr)
    logging.flush()
    sys.exit(128 + signal.SIGINT)



class _QuietLibraries:
  """Keeps the console to cnn_zoo's own progress: other libraries' INFO lines are dropped."""

  def filter(self, record) -> bool:
    return record.levelno > 20 or 'cnn_zoo' in record.pathname or 'experiments' in record.pathname


class _OneLineStorageErrors:
  """Drops orbax's own tracebacks of a checkpoint the disk refused (full, read-only): the run
  reports that in one line naming the path. Its other errors pass."""

  def filter(self, record) -> bool:
    if record.levelno < 40 or 'orbax' not in record.pathname:
      return True
    cause = record.exc_info[1] if record.exc_info else None
    return not (outputs.storage_reason(cause) or
                outputs.storage_reason(Exception(record.getMessage())))


def quiet_logging():
  """The launchers' console filters, installed once by parse_flags or run (not on import: a
  library user's logging is theirs)."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
    handler.addFilter(_QuietLibraries())
    std_logging.getLogger('absl').addFilter(_OneLineStorageErrors())
