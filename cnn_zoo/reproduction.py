"""A paper's result beside both sides' runs of its recipe: cnn_zoo and the PyTorch reference.

Each side's test error is the mean ± sample std over its seeds; the PyTorch side is read from the
JSON files `torch_train.py --json` writes (`model`, `seed`, `test_error_pct`, `train_img_s`, ...),
the cnn_zoo side from its run directories (report.collect). Runs that did not finish their budget
are listed apart and never averaged in.
"""

import json
import os

from cnn_zoo import errors, report, run_files

# He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), Table 6: CIFAR-10 test
# error (%), best of 5 runs (ResNet-110: mean 6.61 ± 0.16 over 5).
PAPER_ERROR_PCT = {'resnet20': 8.75, 'resnet32': 7.51, 'resnet44': 7.17, 'resnet56': 6.97,
                   'resnet110': 6.43}
MARKDOWN = 'reproduction.md'


def zoo_side(workdir: str) -> dict[str, list[dict]]:
  """model -> one record per finished cnn_zoo run under `workdir` (seed, error %, images/s)."""
  sides = {}
  for run in report.collect(workdir):
    if run.results is None:
      continue
    sides.setdefault(run.results['model'], []).append({
        'seed': run.results.get('seed'), 'complete': bool(run.results.get('complete', True)),
        'steps': run.results.get('steps'),
        'error_pct': 100 * (1 - run.results['test_accuracy']),
        'img_s': run.results.get('train_images_per_s'), 'train_s': run.results.get('train_time_s'),
        'source': run.name})
  return sides


def torch_side(paths: list[str]) -> dict[str, list[dict]]:
  """model -> one record per PyTorch reference JSON; a file that is not one is a one-line error."""
  sides = {}
  for path in paths:
    try:
      with open(path, encoding='utf-8') as f:
        result = json.load(f)
      record = {'seed': result['seed'], 'complete': True, 'steps': result['steps'],
                'error_pct': float(result['test_error_pct']), 'img_s': result.get('train_img_s'),
                'train_s': result.get('train_s'), 'source': os.path.basename(path)}
      model = str(result['model'])
    except FileNotFoundError as e:
      raise errors.NotFoundError(f'PyTorch result not found: {path}') from e
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise errors.ConfigError(
          f'{path}: not a torch_train.py result (needs model, seed, steps, test_error_pct): '
          f'{type(e).__name__}: {e}') from e
    sides.setdefault(model, []).append(record)
  return sides


def _cell(records: list[dict], key: str, digits: int) -> str:
  return report._pm([r[key] for r in records if r[key] is not None], digits)  # pylint: disable=protected-access


def markdown(zoo: dict[str, list[dict]], torch: dict[str, list[dict]]) -> str:
  """The table: per model and side, seeds, steps, test error mean ± std, the paper's, images/s."""
  lines = ['| model | side | seeds | steps | test error % (mean ± std) | paper (Table 6) '
           '| train img/s |', '|---|---|---|---:|---:|---:|---:|']
  left_out = []
  for model in sorted(set(zoo) | set(torch), key=lambda m: (PAPER_ERROR_PCT.get(m, 99), m)):
    for side, records in (('cnn_zoo', zoo.get(model, [])), ('PyTorch', torch.get(model, []))):
      done = [r for r in records if r['complete']]
      left_out += [f'{side} {model} seed {r["seed"]} ({r["source"]}): stopped at step '
                   f'{r["steps"]}' for r in records if not r['complete']]
      if not done:
        continue
      seeds = ', '.join(str(r['seed']) for r in sorted(done, key=lambda r: r['seed']))
      steps = ', '.join(sorted({f'{r["steps"]:,}' for r in done}))
      paper = PAPER_ERROR_PCT.get(model)
      lines.append(f'| {model} | {side} | {seeds} | {steps} | {_cell(done, "error_pct", 2)} | '
                   f'{"–" if paper is None else f"{paper:.2f}"} | {_cell(done, "img_s", 0)} |')
  text = '# Reproduction\n\n' + '\n'.join(lines) + '\n'
  if left_out:
    text += '\nNot averaged (budget not finished):\n' + ''.join(f'- {l}\n' for l in left_out)
  return text


def write(workdir: str, torch_jsons: list[str], out: str | None = None) -> str:
  """Writes the table to `out` (default WORKDIR/reproduction.md) and returns it."""
  text = markdown(zoo_side(workdir), torch_side(torch_jsons))
  run_files.write_text(out or os.path.join(workdir, MARKDOWN), text, 'the reproduction table')
  return text
