"""Output paths checked before the work that fills them: a benchmark or a figure that cannot be
written is refused in one line naming the path, not after minutes of computing."""

import errno
import os
import tempfile

from cnn_zoo import errors


# OS errors that mean the disk, not the code: reported in one line naming the path.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
                  errno.EFBIG)
_STORAGE_TEXTS = ('No space left on device', 'Disk quota exceeded', 'Read-only file system',
                  'Permission denied', 'File too large', 'Input/output error')


def storage_reason(e: BaseException | None) -> str:
  """The storage failure behind `e` ('No space left on device' ...), or '' for anything else.

  Orbax and TensorStore wrap OS errors in their own exception types (raised from a background
  thread when saving asynchronously), so the chain and the messages are both searched.
  """
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
      return os.strerror(e.errno)
    text = str(e)
    for reason in _STORAGE_TEXTS:
      if reason in text:
        return reason
    e = e.__cause__ or e.__context__
  return ''


def _probe(folder: str, what: str) -> None:
  try:
    with tempfile.TemporaryFile(dir=folder):
      pass
  except OSError as e:
    raise errors.StorageError(f'{what}: cannot write into {folder} ({e.strerror})') from None


def blocking_file(path: str) -> str:
  """The file that stands where `path` or one of its parent directories should be."""
  blocker = path
  while blocker and not os.path.exists(blocker):
    blocker = os.path.dirname(blocker)
  return blocker or path


def writable_dir(path: str, what: str) -> None:
  """Creates directory `path` if needed and checks that files can be written into it."""
  try:
    os.makedirs(path, exist_ok=True)
  except (FileExistsError, NotADirectoryError):
    raise errors.StorageError(f'{what}: {blocking_file(path)} is a file, not a directory') from None
  except OSError as e:
    raise errors.StorageError(f'{what}: cannot create {path} ({e.strerror})') from None
  _probe(path, what)


def writable_file(path: str, what: str) -> None:
  """Checks that file `path` can be written (its folder exists and takes files), creating nothing."""
  if os.path.isdir(path):
    raise errors.StorageError(f'{what}: {path} is a directory')
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    blocker = folder
    while blocker and not os.path.exists(blocker):
      blocker = os.path.dirname(blocker)
    problem = f'{blocker} is a file, not a directory' if os.path.isfile(blocker) else \
        f'no directory {folder}'
    raise errors.StorageError(f'{what}: cannot write {path}: {problem}')
  if os.path.exists(path) and not os.access(path, os.W_OK):
    raise errors.StorageError(f'{what}: {path} is not writable')
  _probe(folder, what)
