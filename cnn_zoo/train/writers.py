"""Run outputs: metrics.jsonl, TensorBoard event files and the console (process 0 only)."""

import json
import os
import time

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.summary.writer import event_file_writer


class MetricWriter:
  """Writes each record to metrics.jsonl (one JSON object per line) and to TensorBoard."""

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int = 0):
    self.enabled = enabled
    self.kept = []  # the records of earlier processes of this run, up to resume_step
    if enabled:
      path = os.path.join(workdir, 'metrics.jsonl')
      self.kept = _keep_up_to(path, resume_step)
      self._jsonl = open(path, 'a', encoding='utf-8')
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


def _keep_up_to(path: str, step: int) -> list:
  """Drops records past `step` (written after the checkpoint a run resumes from) and torn lines.

  Returns the records kept.
  """
  if not os.path.exists(path):
    return []
  kept, records = [], []
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue  # the torn last line of a killed run
      if line.endswith('\n') and record.get('step', 0) <= step:
        kept.append(line)
        records.append(record)
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    f.writelines(kept)
  os.replace(path + '.tmp', path)
  return records


def _plain(v):
  try:
    return v.item()
  except AttributeError:
    return v
