"""Run outputs: metrics.jsonl, TensorBoard event files and the console (process 0 only)."""

import json
import os
import time

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.summary.writer import event_file_writer

from cnn_zoo import outputs


class MetricWriter:
  """Writes each record to metrics.jsonl (one JSON object per line) and to TensorBoard."""

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int = 0):
    self.enabled = enabled
    self.kept = []  # the records of earlier processes of this run, up to resume_step
    if enabled:
      path = os.path.join(workdir, 'metrics.jsonl')
      self.kept = _keep_up_to(path, resume_step)
      self._jsonl = outputs.open_own(path, 'a')
      # TensorBoard's own event-file writer: no TensorFlow needed to write what it reads.
      self._tb = event_file_writer.EventFileWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, split: str, values: dict) -> None:
    if not self.enabled:
      return
    record = {'step': int(step), 'split': split, **{k: _plain(v) for k, v in values.items()}}
    # One write of a whole line, flushed at once, so a killed run leaves no torn record.
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    scalars = [scalar_summary.scalar_pb(f'{split}/{k}', v).value[0] for k, v in record.items()
               if k not in ('step', 'split') and isinstance(v, (int, float))]
    if scalars:
      self._tb.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                         summary=summary_pb2.Summary(value=scalars)))

  def kept_record(self, step: int, split: str) -> dict:
    """The record an earlier process of this run wrote at (step, split), or {}."""
    return next((r for r in reversed(self.kept) if r['step'] == step and r['split'] == split), {})

  def flush(self):
    if self.enabled:
      self._tb.flush()

  def close(self):
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


def read_record(line: bytes) -> dict | None:
  """The record on one line of metrics.jsonl, or None for a line that is not one: torn (the last
  line of a killed run), not UTF-8, not JSON, or not an object with an integer step and a split."""
  try:
    record = json.loads(line.decode('utf-8'))
  except ValueError:  # UnicodeDecodeError and json.JSONDecodeError
    return None
  if not (isinstance(record, dict) and type(record.get('step')) is int and
          isinstance(record.get('split'), str)):
    return None
  return record


def _keep_up_to(path: str, step: int) -> list:
  """Drops records past `step` (written after the checkpoint a run resumes from) and lines that
  are not records (torn, undecodable), so that none of them blocks a resume.

  Returns the records kept.
  """
  if not os.path.lexists(path):
    return []
  outputs.open_own(path, 'a').close()  # a link there is refused, not read or replaced
  kept, records = [], []
  with open(path, 'rb') as f:
    for line in f:
      record = read_record(line)
      if record is not None and line.endswith(b'\n') and record['step'] <= step:
        kept.append(line.decode('utf-8'))
        records.append(record)
  with outputs.open_own(path + '.tmp') as f:
    f.writelines(kept)
  os.replace(path + '.tmp', path)
  return records


def _plain(v):
  try:
    return v.item()
  except AttributeError:
    return v
