"""The comparison of a sweep: one row per configuration, seeds aggregated, and the plots.

Reads only what runs wrote in WORKDIR/*/ (results.json, config.json, metrics.jsonl), so it works on
a partial sweep and on any directory of training runs; a run of replicas (config.seeds) counts as
the runs of its seeds. Runs are one configuration when every config
field but `seed` agrees; a row shows the mean ± sample standard deviation (n - 1) over its seeds.
"""

import csv
import dataclasses
import json
import os
import statistics

from cnn_zoo import errors, escape, run_files
from cnn_zoo.data import sources
from cnn_zoo.train import config as config_lib

MARKDOWN, CSV = 'comparison.md', 'comparison.csv'
PLOTS = ('accuracy_vs_macs.png', 'accuracy_vs_params.png', 'learning_curves.png', 'throughput.png')
NOT_A_SETTING = ('seed', 'model', 'dataset')  # columns of their own, or aggregated over
# results.json fields the table computes with: a run whose are not numbers is left out, named.
NUMBERS = ('params', 'fwd_macs_per_example', 'test_accuracy', 'test_top5', 'epochs',
           'train_time_s', 'train_images_per_s')


@dataclasses.dataclass(frozen=True)
class Run:
  """One training workdir."""
  name: str  # its directory name
  config: dict  # config.json, flattened to dotted fields ({} if absent)
  results: dict | None  # results.json; None while unfinished
  metrics: list[dict]  # metrics.jsonl records
  problem: str = ''  # why its config.json or results.json cannot be read: it is left out


@dataclasses.dataclass(frozen=True)
class Row:
  """One configuration: the runs that differ only in their seed."""
  model: str
  dataset: str
  setting: str  # the fields that vary across the compared runs, e.g. 'learning_rate=0.05'
  runs: tuple[Run, ...]

  def values(self, key: str, scale: float = 1.0) -> list[float]:
    return [scale * r.results[key] for r in self.runs if r.results.get(key) is not None]

  def first(self, key: str):
    return self.runs[0].results.get(key)

  @property
  def seeds(self) -> list:
    return [r.results.get('seed', r.config.get('seed')) for r in self.runs]

  @property
  def label(self) -> str:
    return self.model + (f' ({self.setting})' if self.setting else '')


def _read_object(path: str, what: str) -> dict:
  value = run_files.read_object(path) or {}  # {}: removed since it was listed
  if what == 'results':
    if not (isinstance(value.get('model'), str) and isinstance(value.get('dataset'), str)):
      raise run_files.Unreadable(path, 'ValueError', 'no model or dataset')
    for key in NUMBERS:
      number = value.get(key)
      if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float))):
        raise run_files.Unreadable(path, 'ValueError', f'{key}={number!r} is not a number')
  return value


def collect(workdir: str) -> list[Run]:
  """Every run directly under `workdir` (a directory holding config.json or results.json)."""
  if not os.path.isdir(workdir):
    raise errors.NotFoundError(f'workdir not found: {workdir}')
  runs = []
  for name in sorted(os.listdir(workdir)):
    path = os.path.join(workdir, name)
    config_path, results_path = (run_files.path(path, f)
                                 for f in (run_files.CONFIG, run_files.RESULTS))
    if not (os.path.isfile(config_path) or os.path.isfile(results_path)):
      continue
    config, results = {}, None
    try:
      if os.path.isfile(config_path):
        config = config_lib.flatten(_read_object(config_path, 'config'))
      if os.path.isfile(results_path):
        results = _read_object(results_path, 'results')
    except run_files.Unreadable as e:  # one damaged run is left out, not the whole report
      runs.append(Run(name, {}, None, [], f'{os.path.basename(e.file)}: {e.kind}'
                                          f'{": " + e.detail[:80] if e.detail else ""}'))
      continue
    try:
      metrics = run_files.read_records(run_files.path(path, run_files.METRICS))
    except OSError:  # unreadable: the run still shows, without curves
      metrics = []
    runs.extend(_as_seeds(Run(name, config, results, metrics)))
  return runs


def _as_seeds(run: Run) -> list[Run]:
  """A run of replicas (config.seeds; cnn_zoo.train.replicas) as the runs of its seeds, each with
  its own results, metrics and config (seed=s, seeds=()), as separate runs would have written."""
  seeds = run.config.get('seeds') or []
  if not seeds:
    return [run]
  pick = lambda value, i: value[i] if isinstance(value, list) and len(value) == len(seeds) \
      else value
  return [Run(f'{run.name}[seed={seed}]', {**run.config, 'seed': seed, 'seeds': []},
              run.results['replicas'][i] if run.results else None,
              [{k: pick(v, i) for k, v in record.items()} for record in run.metrics])
          for i, seed in enumerate(seeds)]


def _key(value) -> str:
  return json.dumps(value, sort_keys=True)


def group(runs: list[Run]) -> list[Row]:
  """Finished runs grouped by configuration (every config field but seed), smallest MACs first."""
  finished = [r for r in runs if r.results is not None]
  # Fields every run recorded: runs from before a field was added count as the same configuration.
  fields = sorted(set.intersection(*(set(r.config) for r in finished)) - set(NOT_A_SETTING)
                  if finished else ())
  varying = [f for f in fields if len({_key(r.config.get(f)) for r in finished}) > 1]
  groups: dict[tuple, list[Run]] = {}
  for r in finished:
    key = (r.results['model'], r.results['dataset'], *(_key(r.config.get(f)) for f in fields))
    groups.setdefault(key, []).append(r)
  rows = []
  for members in groups.values():
    config = members[0].config
    setting = ','.join(f'{f}={_setting_value(config.get(f))}' for f in varying)
    rows.append(Row(members[0].results['model'], members[0].results['dataset'], setting,
                    tuple(members)))
  rows.sort(key=lambda row: (row.dataset, row.first('fwd_macs_per_example') or 0, row.model,
                             row.setting))
  return rows


TARGET_ACCURACY = 0.9  # the "time to reach" column: small budgets are compared by it


def time_to_target(run: Run, target: float = TARGET_ACCURACY) -> tuple[int, float] | None:
  """(step, training seconds) of the run's first evaluation at or above `target` test top-1,
  from its metrics log; None if it never got there. The seconds are the cumulative training time
  of the train record logged at that step (evaluations are not counted)."""
  train_time = {m['step']: m.get('train_time_s') for m in run.metrics if m.get('split') == 'train'}
  for m in sorted((m for m in run.metrics if m.get('split') == 'test'), key=lambda m: m['step']):
    if m.get('accuracy', 0) >= target:
      return m['step'], train_time.get(m['step'])
  return None


def _to_target_cell(row: Row) -> str:
  reached = [time_to_target(r) for r in row.runs]
  got = [r for r in reached if r is not None]
  if not got:
    return 'not reached'
  steps = _pm([float(step) for step, _ in got], 0)
  seconds = [t for _, t in got if t is not None]
  text = f'{steps} steps' + (f', {_pm(seconds, 1)} s' if seconds else '')
  return text if len(got) == len(reached) else f'{text} ({len(got)} of {len(reached)} seeds)'


def budget_line(rows: list[Row]) -> str:
  """The training budget of the compared runs, in one sentence ('' without runs)."""
  if not rows:
    return ''
  budgets = sorted({(r.results.get('steps'), r.results.get('batch_size'),
                     round(r.results.get('epochs') or 0, 3)) for row in rows for r in row.runs})
  if len(budgets) == 1 and None not in budgets[0]:
    steps, batch, epochs = budgets[0]
    return f'Budget: {steps:,} steps of {batch} images ({epochs:g} epochs) per run.'
  return 'Budget: not the same for every run; see the epochs column.'


def _setting_value(value) -> str:
  if isinstance(value, list):
    return '(' + ','.join(str(v) for v in value) + ')'
  return str(value)


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
  """Mean and sample standard deviation (n - 1); std is None for fewer than two values."""
  if not values:
    return None, None
  return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _pm(values: list[float], digits: int) -> str:
  mean, std = mean_std(values)
  if mean is None:
    return '–'
  text = f'{mean:,.{digits}f}'
  return text if std is None else f'{text} ± {std:,.{digits}f}'


def _si(n) -> str:
  if n is None:
    return '–'
  for scale, suffix in ((1e9, 'G'), (1e6, 'M'), (1e3, 'K')):
    if n >= scale:
      return f'{n / scale:.2f}{suffix}'
  return str(n)


def markdown(rows: list[Row], runs: list[Run], workdir: str) -> str:
  """comparison.md: the table and what it is made of."""
  with_setting = any(row.setting for row in rows)
  header = ['model', 'dataset'] + (['setting'] if with_setting else []) + [
      'seeds', 'params', 'MACs', 'test top-1 (%)', 'test top-5 (%)', 'epochs', 'train time (s)',
      'train images/s', f'to {TARGET_ACCURACY:.0%} top-1']
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
  for row in rows:
    cells = [row.model, sources.short_name(row.dataset)] + ([row.setting] if with_setting else []) + [
        str(len(row.runs)), _si(row.first('params')), _si(row.first('fwd_macs_per_example')),
        _pm(row.values('test_accuracy', 100), 2), _pm(row.values('test_top5', 100), 2),
        f'{row.first("epochs") or 0:.3g}', _pm(row.values('train_time_s'), 1),
        _pm(row.values('train_images_per_s'), 0), _to_target_cell(row)]
    lines.append('| ' + ' | '.join(escape.markdown(c) for c in cells) + ' |')
  unfinished = [r.name for r in runs if r.results is None and not r.problem]
  unreadable = [f'{r.name} ({r.problem})' for r in runs if r.problem]
  notes = [f'{sum(len(row.runs) for row in rows)} finished run(s) in {workdir}, '
           f'{len(rows)} configuration(s).',
           'Mean ± sample standard deviation (n - 1) over seeds; no ± for a single seed. '
           'Trainable parameters and forward multiply-accumulates per example; '
           'top-1/top-5 over the whole test split. '
           f'"to {TARGET_ACCURACY:.0%} top-1": the first evaluation at or above it, in steps and '
           'seconds of training (evaluations not counted); it is only as fine as the evaluations '
           'the runs made.']
  if unfinished:
    notes.append(f'Not finished (left out): {", ".join(map(escape.markdown, unfinished))}.')
  if unreadable:
    notes.append(f'Unreadable (left out): {", ".join(map(escape.markdown, unreadable))}.')
  incomplete = [r.name for row in rows for r in row.runs if r.results.get('complete') is False]
  if incomplete:
    notes.append(f'Stopped by their time budget before the end of their steps (their rows show '
                 f'what they reached): {", ".join(map(escape.markdown, incomplete))}.')
  if not rows:
    lines = ['No finished runs yet.']
  budget = budget_line(rows)
  return '# Comparison\n\n' + (budget + '\n\n' if budget else '') + '\n'.join(lines) + '\n\n' + '\n'.join(notes) + '\n'


CSV_COLUMNS = ('model', 'dataset', 'setting', 'seeds', 'runs', 'params', 'fwd_macs_per_example',
               'test_top1_pct_mean', 'test_top1_pct_std', 'test_top5_pct_mean',
               'test_top5_pct_std', 'epochs', 'train_time_s_mean', 'train_time_s_std',
               'train_images_per_s_mean', 'train_images_per_s_std', 'steps_to_target_mean',
               'seconds_to_target_mean', 'seeds_reaching_target')


def csv_rows(rows: list[Row]) -> list[dict]:
  """comparison.csv's records; text cells that a spreadsheet would run as formulas neutralised."""
  out = []
  for row in rows:
    record = {'model': row.model, 'dataset': row.dataset, 'setting': row.setting,
              'seeds': ' '.join(str(s) for s in row.seeds),
              'runs': ' '.join(r.name for r in row.runs), 'params': row.first('params'),
              'fwd_macs_per_example': row.first('fwd_macs_per_example'),
              'epochs': round(row.first('epochs') or 0, 6)}
    for column, key, scale in (('test_top1_pct', 'test_accuracy', 100),
                               ('test_top5_pct', 'test_top5', 100),
                               ('train_time_s', 'train_time_s', 1),
                               ('train_images_per_s', 'train_images_per_s', 1)):
      mean, std = mean_std(row.values(key, scale))
      record[f'{column}_mean'] = '' if mean is None else round(mean, 6)
      record[f'{column}_std'] = '' if std is None else round(std, 6)
    reached = [t for t in (time_to_target(r) for r in row.runs) if t is not None]
    steps, _ = mean_std([float(step) for step, _ in reached])
    seconds, _ = mean_std([t for _, t in reached if t is not None])
    record['steps_to_target_mean'] = '' if steps is None else round(steps, 6)
    record['seconds_to_target_mean'] = '' if seconds is None else round(seconds, 6)
    record['seeds_reaching_target'] = len(reached)
    out.append({k: escape.csv_cell(v) for k, v in record.items()})
  return out


def _curve(row: Row, split: str, key: str, scale: float = 1.0) -> tuple[list, list]:
  """(epochs, values) of `split` records, averaged over the row's seeds at the steps all share."""
  per_run = [{m['step']: m for m in r.metrics if m.get('split') == split and key in m}
             for r in row.runs]
  steps = sorted(set.intersection(*(set(d) for d in per_run))) if per_run else []
  epochs = [per_run[0][s]['epoch'] for s in steps]
  values = [scale * statistics.fmean(d[s][key] for d in per_run) for s in steps]
  return epochs, values


def _figure(width=6.4, height=4.8):
  from matplotlib.figure import Figure  # no pyplot: no global state, no display needed
  return Figure(figsize=(width, height), dpi=100, layout='constrained')


def _scatter(rows: list[Row], x_key: str, x_label: str, path: str) -> None:
  fig = _figure()
  ax = fig.add_subplot()
  datasets = sorted({row.dataset for row in rows})
  for i, dataset in enumerate(datasets):
    points = [(row.first(x_key), *mean_std(row.values('test_accuracy', 100)), row)
              for row in rows if row.dataset == dataset and (row.first(x_key) or 0) > 0]
    if not points:
      continue
    xs, ys, errs = [p[0] for p in points], [p[1] for p in points], [p[2] or 0 for p in points]
    ax.errorbar(xs, ys, yerr=errs, fmt='os^Dv'[i % 5], capsize=3,
                label=sources.short_name(dataset))
    for x, y, _, row in points:
      ax.annotate(row.label, (x, y), textcoords='offset points', xytext=(4, 4), fontsize=8)
  ax.set_xscale('log')
  ax.margins(0.15)
  ax.set_xlabel(x_label)
  ax.set_ylabel('test top-1 accuracy (%)')
  ax.grid(True, which='both', alpha=0.3)
  if len(datasets) > 1:
    ax.legend()
  fig.savefig(path)


def _learning_curves(rows: list[Row], path: str) -> None:
  fig = _figure(11, 4.5)
  acc_ax, loss_ax = fig.subplots(1, 2)
  several = len({row.dataset for row in rows}) > 1
  for row in rows:
    label = row.label + (f' [{sources.short_name(row.dataset)}]' if several else '')
    acc_ax.plot(*_curve(row, 'test', 'accuracy', 100), marker='.', label=label)
    loss_ax.plot(*_curve(row, 'train', 'loss'), label=label)
  acc_ax.set(xlabel='epoch', ylabel='test top-1 accuracy (%)', title='test accuracy')
  loss_ax.set(xlabel='epoch', ylabel='train loss', title='train loss')
  if all(v > 0 for row in rows for v in _curve(row, 'train', 'loss')[1]):
    loss_ax.set_yscale('log')
  for ax in (acc_ax, loss_ax):
    ax.grid(True, alpha=0.3)
  if rows:
    loss_ax.legend(fontsize=8)
  fig.savefig(path)


def _throughput(rows: list[Row], path: str) -> None:
  rows = [row for row in rows if row.values('train_images_per_s')]
  fig = _figure(6.4, 1.2 + 0.4 * max(len(rows), 1))
  ax = fig.add_subplot()
  stats = [mean_std(row.values('train_images_per_s')) for row in rows]
  several = len({row.dataset for row in rows}) > 1
  labels = [row.label + (f' [{sources.short_name(row.dataset)}]' if several else '') for row in rows]
  bars = ax.barh(range(len(rows)), [m for m, _ in stats], xerr=[s or 0 for _, s in stats],
                 capsize=3)
  ax.bar_label(bars, [f'{m:,.0f}' for m, _ in stats], padding=4, fontsize=8)
  ax.set_yticks(range(len(rows)), labels)
  ax.invert_yaxis()
  if rows:
    ax.set_xscale('log')
  ax.set_xlabel('training throughput (images/s)')
  ax.grid(True, axis='x', which='both', alpha=0.3)
  fig.savefig(path)


def write(workdir: str, out_dir: str | None = None) -> str:
  """Writes comparison.md, comparison.csv and the PNG plots into `out_dir` (default: `workdir`);
  returns the markdown."""
  runs = collect(workdir)
  rows = group(runs)
  text = markdown(rows, runs, workdir)
  out_dir = out_dir or workdir
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, MARKDOWN), 'w', encoding='utf-8') as f:
    f.write(text)
  with open(os.path.join(out_dir, CSV), 'w', encoding='utf-8', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(csv_rows(rows))
  if rows:
    _scatter(rows, 'fwd_macs_per_example', 'forward MACs per example',
             os.path.join(out_dir, PLOTS[0]))
    _scatter(rows, 'params', 'trainable parameters', os.path.join(out_dir, PLOTS[1]))
    _learning_curves(rows, os.path.join(out_dir, PLOTS[2]))
    _throughput(rows, os.path.join(out_dir, PLOTS[3]))
  return text
