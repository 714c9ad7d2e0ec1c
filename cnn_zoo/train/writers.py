"""Run outputs behind one seam (`Writer`): metrics.jsonl, TensorBoard event files and the
experiment trackers a config names (process 0 only)."""

import json
import os
import time

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.summary.writer import event_file_writer

from cnn_zoo import run_files
from cnn_zoo.train import trackers


class Writer:
  """The seam every output of a run goes through (metrics.jsonl, TensorBoard, the trackers, a
  writer passed to train_and_evaluate): `start` once with the run's config, `write` for each
  record as it is logged, `close` at the end with results.json's content (None when the run
  stops before its end: a signal, which a rerun resumes)."""

  def start(self, config: dict, resume_step: int) -> None:
    """`config`: the run's config as config.json holds it; `resume_step`: 0 for a fresh run."""

  def write(self, step: int, split: str, values: dict) -> None:
    """One record: `values` are plain numbers (and the odd string) logged at `step`."""

  def flush(self) -> None:
    pass

  def close(self, results: dict | None = None) -> None:
    pass


class JsonlWriter(Writer):
  """WORKDIR/metrics.jsonl, one JSON object per line; a resumed run keeps the records up to its
  checkpoint's step (`kept`) and drops the rest."""

  def __init__(self, workdir: str, resume_step: int = 0):
    path = run_files.path(workdir, run_files.METRICS)
    self.kept = _keep_up_to(path, resume_step)  # the records of earlier processes of this run
    self._file = run_files.open_own(path, 'a')  # never through a link

  def write(self, step, split, values):
    # One write of a whole line, flushed at once, so a killed run leaves no torn record.
    self._file.write(json.dumps({'step': step, 'split': split, **values}) + '\n')
    self._file.flush()

  def close(self, results=None):
    self._file.close()


class TensorBoardWriter(Writer):
  """WORKDIR/tensorboard/: every numeric value as a scalar named SPLIT/NAME."""

  def __init__(self, workdir: str):
    # TensorBoard's own event-file writer: no TensorFlow needed to write what it reads.
    self._tb = event_file_writer.EventFileWriter(run_files.path(workdir, run_files.TENSORBOARD))

  def write(self, step, split, values):
    scalars = [scalar_summary.scalar_pb(f'{split}/{k}', v).value[0] for k, v in values.items()
               if isinstance(v, (int, float))]
    if scalars:
      self._tb.add_event(event_pb2.Event(wall_time=time.time(), step=step,
                                         summary=summary_pb2.Summary(value=scalars)))

  def flush(self):
    self._tb.flush()

  def close(self, results=None):
    self._tb.close()


class MetricWriter:
  """A run's writers behind one call: metrics.jsonl, TensorBoard, the trackers config.trackers
  names (cnn_zoo.train.trackers) and `extra` writers; only process 0 writes (`enabled`)."""

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int = 0,
               config=None, extra=()):
    self.enabled = enabled
    self.kept = []  # the records of earlier processes of this run, up to resume_step
    self.writers = []
    if enabled:
      jsonl = JsonlWriter(workdir, resume_step)
      self.kept = jsonl.kept
      names = tuple(config.trackers) if config is not None else ()
      self.writers = [jsonl, TensorBoardWriter(workdir),
                      *trackers.make(names, workdir, config), *extra]
      if config is not None:
        plain = json.loads(config.to_json())
        for writer in self.writers:
          writer.start(plain, resume_step)

  def write(self, step: int, split: str, values: dict) -> None:
    values = {k: _plain(v) for k, v in values.items()}
    for writer in self.writers:
      writer.write(int(step), split, values)

  def kept_record(self, step: int, split: str) -> dict:
    """The record an earlier process of this run wrote at (step, split), or {}."""
    return next((r for r in reversed(self.kept) if r['step'] == step and r['split'] == split), {})

  def flush(self):
    for writer in self.writers:
      writer.flush()

  def close(self, results: dict | None = None):
    """Closes every writer; `results` (results.json's content) when the run got to its end."""
    for writer in self.writers:
      writer.close(results)


def _keep_up_to(path: str, step: int) -> list:
  """Drops records past `step` (written after the checkpoint a run resumes from) and lines that
  are not records (torn, undecodable), so that none of them blocks a resume.

  Returns the records kept.
  """
  if not os.path.lexists(path):
    return []
  run_files.open_own(path, 'a').close()  # a link there is refused, not read or replaced
  kept = [(line, record) for line, record in run_files.read_lines(path) if record['step'] <= step]
  run_files.write_file(path, lambda f: f.writelines(line for line, _ in kept))
  return [record for _, record in kept]


def _plain(v):
  try:
    return v.item()
  except AttributeError:
    return v
