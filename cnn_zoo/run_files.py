"""A run directory's files: their names, how they are read and how they are written.

Every module that reads or writes a run file goes through here, so that each file has one name,
one way to be read (with one rule for damage) and one way to be written:

- JSON objects (config.json, results.json, conv_impl.json, dataset.json, ...): `read_object`
  returns None for a file that is absent and raises `Unreadable` (naming why) for one that is not
  UTF-8 JSON holding an object; the caller decides whether that refuses, warns or leaves a run out.
- metrics.jsonl: `read_records` keeps the lines that are whole records (ended by their newline, a
  JSON object with an integer `step` and a string `split`) and skips every other line (torn by a
  kill, not UTF-8, not JSON, not a record), wherever it is read.
- Every write is whole (`write_file`): a temporary file beside the target, renamed over it when
  complete, so a cut or failed write leaves the old file or none, never a part; the temporary file
  is opened without following a symbolic link planted there (`open_own`).
"""

import errno
import json
import os

from cnn_zoo import errors

CONFIG = 'config.json'  # the run's config, as it ran: identifies the run
RESULTS = 'results.json'  # written once, at the end (or when a time budget stops it)
METRICS = 'metrics.jsonl'  # one record per line, appended as the run logs
CONV_IMPL = 'conv_impl.json'  # the convolutions config.conv_impl='auto' chose, held to on resume
DATASET = 'dataset.json'  # what inference needs of the data: normalisation, classes, shapes
CONVERTED = 'converted.json'  # marks a run converted from torchvision weights, and their source
TRACKERS = 'trackers.json'  # the experiment trackers' run ids, so a resume logs to the same runs
CHECKPOINTS = 'checkpoints'
DAMAGED = 'checkpoints.damaged'  # checkpoints that could not be read, set aside
TENSORBOARD = 'tensorboard'
LOCK = '.lock'
TMP = '.tmp'  # the suffix of a file being written

# What a training run writes; --overwrite removes exactly these.
RUN_FILES = (CHECKPOINTS, DAMAGED, TENSORBOARD, METRICS, RESULTS, CONFIG, CONV_IMPL, TRACKERS,
             DATASET)
# The files a run writes by name (and their temporary twins): a symbolic link there is refused.
OWN_FILES = (LOCK, CONFIG, METRICS, RESULTS, CONV_IMPL, DATASET)


def path(workdir: str, name: str) -> str:
  """WORKDIR/NAME of the run file `name` (one of the names above)."""
  return os.path.join(workdir, name)


class Unreadable(ValueError):
  """A run file that exists but cannot be used; `kind` and `detail` say why (the exception's type
  and its first line: 'JSONDecodeError', 'Expecting value: line 1 column 1 (char 0)')."""

  def __init__(self, file: str, kind: str, detail: str):
    self.file, self.kind, self.detail = file, kind, detail
    super().__init__(f'{file} is unreadable ({self.reason})')

  @property
  def reason(self) -> str:
    return f'{self.kind}: {self.detail}' if self.detail else self.kind


def read_object(file: str) -> dict | None:
  """The JSON object in `file`; None when there is no such file. A file that cannot be read, is
  not UTF-8 JSON or holds something other than an object raises `Unreadable`."""
  try:
    with open(file, encoding='utf-8') as f:
      value = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
    raise Unreadable(file, type(e).__name__, (str(e).splitlines() or [''])[0]) from None
  if not isinstance(value, dict):
    raise Unreadable(file, 'ValueError', f'a JSON {type(value).__name__}, not an object')
  return value


def record_of(line: bytes) -> dict | None:
  """The record on one line of metrics.jsonl (with its newline), or None for a line that is not
  one: torn (no newline: the last line of a killed run, even where it parses), not UTF-8, not
  JSON, or not an object with an integer step and a split."""
  if not line.endswith(b'\n'):
    return None
  try:
    record = json.loads(line.decode('utf-8'))
  except ValueError:  # UnicodeDecodeError and json.JSONDecodeError
    return None
  if not (isinstance(record, dict) and type(record.get('step')) is int and
          isinstance(record.get('split'), str)):
    return None
  return record


def read_lines(file: str) -> list[tuple[bytes, dict]]:
  """(line, record) of every line of metrics.jsonl at `file` that is a record (`record_of`), in
  order; [] when there is no such file."""
  try:
    with open(file, 'rb') as f:
      pairs = [(line, record_of(line)) for line in f]
  except FileNotFoundError:
    return []
  return [(line, record) for line, record in pairs if record is not None]


def read_records(file: str) -> list[dict]:
  """The records of metrics.jsonl at `file` (`read_lines`)."""
  return [record for _, record in read_lines(file)]


def open_own(file: str, mode: str = 'w'):
  """open(file, mode) ('w' or 'a', text; 'wb' or 'ab', binary) that never follows a symbolic link
  at `file`: a link planted there (to another file) is refused, naming it, instead of written
  through."""
  flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (
      os.O_APPEND if mode.startswith('a') else os.O_TRUNC)
  try:
    fd = os.open(file, flags, 0o666)
  except OSError as e:
    if e.errno == errno.ELOOP and os.path.islink(file):
      raise errors.WorkdirError(f'{file} is a symbolic link (to {os.readlink(file)}); files are '
                                f'written only as themselves, never through a link: remove it') \
          from None
    raise
  return os.fdopen(fd, mode) if 'b' in mode else os.fdopen(fd, mode, encoding='utf-8')


def write_file(file: str, fill, what: str | None = None, shared: bool = False) -> None:
  """Writes `file` whole: `fill(f)` writes a temporary file beside it (binary), renamed over `file`
  only when complete, so a cut or failed write leaves the old file or none, never a part.

  `shared`: several processes may write `file` at once (a cache): each writes its own temporary
  file. `what` (a flag, a description): an OSError becomes a StorageError naming it and the path;
  without it the OSError is raised as it is (a run reports a full disk in its own words).
  """
  tmp = f'{file}.{os.getpid()}{TMP}' if shared else file + TMP
  try:
    with open_own(tmp, 'wb') as f:
      fill(f)
    os.replace(tmp, file)
  except BaseException as e:  # a failed `fill` too: no part of a file is left behind
    if os.path.isfile(tmp) and not os.path.islink(tmp):
      os.remove(tmp)
    if what is None or not isinstance(e, OSError):
      raise
    raise errors.StorageError(f'{what}: cannot write {file} ({e.strerror})') from None


def write_text(file: str, text: str, what: str | None = None) -> None:
  """Writes `text` to `file` whole (`write_file`)."""
  write_file(file, lambda f: f.write(text.encode('utf-8')), what)


def write_json(file: str, value, what: str | None = None, shared: bool = False,
               **dump_args) -> None:
  """Writes `value` as JSON to `file` whole (`write_file`); `dump_args` go to json.dumps
  (default indent=2)."""
  text = json.dumps(value, **{'indent': 2, **dump_args})
  write_file(file, lambda f: f.write(text.encode('utf-8')), what, shared)
