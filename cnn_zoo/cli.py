"""What every launcher shares: quiet start-up, user errors as one line instead of a traceback, and
a run stopped by a signal as one line and exit status 128 + the signal number."""

import difflib
import importlib.util
import logging as std_logging
import os
import signal
import sys

from absl import flags, logging

from cnn_zoo import errors, output_paths

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
  argv = find_config_files(argv)
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


def installed_configs() -> str:
  """The folder of the `configs` package this process imports (a checkout's or the installed)."""
  spec = importlib.util.find_spec('configs')
  return os.path.dirname(spec.origin) if spec and spec.origin else ''


def find_config(value: str) -> str:
  """`--config=PATH[:ARG]` as given when PATH exists from here; else the file of that name in the
  installed configs package (`default.py`, `configs/default.py` and `sweeps/digits_zoo.py` all
  name one there), so a launcher finds the project's configs from any directory."""
  path, sep, arg = value.partition(':')
  if not path or os.path.exists(path):
    return value
  folder = installed_configs()
  relative = path.removeprefix('configs' + os.sep) if not os.path.isabs(path) else ''
  for name in (relative, relative + '.py'):
    if folder and name and '..' not in name.split(os.sep) and os.path.isfile(os.path.join(folder, name)):
      return os.path.join(folder, name) + sep + arg
  return value


def find_config_files(argv: list[str], flag_values=flags.FLAGS) -> list[str]:
  """argv with each config file flag's value passed through find_config."""
  names = {name for name in flag_values
           if type(flag_values[name].parser).__name__ == 'ConfigFileFlagParser'}
  out, take_next = [], False
  for i, arg in enumerate(argv):
    if take_next:  # the value of `--config PATH`
      arg, take_next = find_config(arg), False
    elif i and arg.startswith('-') and not arg.startswith('---'):
      name, eq, value = arg.lstrip('-').partition('=')
      if name in names:
        if eq:
          arg = arg[:len(arg) - len(value)] + find_config(value)
        else:
          take_next = True
    out.append(arg)
  return out


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
    installed = installed_configs()
    if not installed:
      return f' (no folder {folder})'
    # From outside a checkout: name the installed configs, as find_config takes them.
    files = sorted(f for f in os.listdir(installed) if f.endswith('.py') and not f.startswith('_'))
    close = difflib.get_close_matches(os.path.basename(path), files, n=3, cutoff=0.5)
    return f' (no folder {folder}; installed configs: {", ".join(close or files)})'
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
    return not (output_paths.storage_reason(cause) or
                output_paths.storage_reason(Exception(record.getMessage())))


def quiet_logging():
  """The launchers' console filters, installed once by parse_flags or run (not on import: a
  library user's logging is theirs)."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
    handler.addFilter(_QuietLibraries())
    std_logging.getLogger('absl').addFilter(_OneLineStorageErrors())
