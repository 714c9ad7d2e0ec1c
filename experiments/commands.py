"""The `cnn-zoo` command: every launcher in experiments/ as a subcommand.

  cnn-zoo train --config=default.py:smoke --workdir=runs/smoke   # = python -m experiments.train ...
  cnn-zoo help                                                  # the subcommands, one line each

One command rather than one script per launcher (as `tfds build`, `mlflow ui`): one name on the
PATH, and only the launcher asked for is imported, so the launchers' flags (each defines its own
--workdir) never meet. It lives with the launchers: nothing in cnn_zoo/ reaches them.
"""

import ast
import difflib
import importlib
import importlib.util
import sys

# Subcommand -> the launcher module it runs (experiments/NAME.py, with its own flags).
COMMANDS = {
    'train': 'experiments.train',
    'sweep': 'experiments.sweep',
    'compare': 'experiments.compare',
    'summary': 'experiments.summary',
    'predict': 'experiments.predict',
    'convert': 'experiments.convert',
    'visualize': 'experiments.visualize',
    'benchmark': 'experiments.benchmark',
    'pack': 'experiments.pack',
    'check-torchvision': 'experiments.check_torchvision',
    'torch-side': 'experiments.torch_side',
}
PROG = 'cnn-zoo'


def summary_line(module: str) -> str:
  """The first line of a launcher's docstring, read without importing it (no JAX start-up)."""
  spec = importlib.util.find_spec(module)
  with open(spec.origin, encoding='utf-8') as f:
    doc = ast.get_docstring(ast.parse(f.read())) or ''
  return doc.splitlines()[0] if doc else ''


def usage() -> str:
  width = max(map(len, COMMANDS))
  lines = [f'usage: {PROG} COMMAND [FLAGS]   ({PROG} COMMAND --help: its flags)', '',
           'commands:']
  lines += [f'  {name:<{width}}  {summary_line(module)}' for name, module in COMMANDS.items()]
  lines += ['', 'A --config file that does not exist from here is looked up in the installed '
            'configs: --config=default.py:smoke, --config=sweeps/digits_zoo.py.']
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
  """Runs `cnn-zoo COMMAND FLAGS...` as `python -m experiments.COMMAND FLAGS...` would."""
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ('help', '-h', '--help', '-help', '--helpfull'):
    print(usage())
    sys.exit(0 if len(argv) >= 2 else 2)
  name = argv[1].replace('_', '-')
  if name not in COMMANDS:
    close = difflib.get_close_matches(name, COMMANDS, n=1)
    hint = f'did you mean {close[0]}? ' if close else ''
    print(f'error: {PROG}: no command {argv[1]!r}; {hint}commands: {", ".join(COMMANDS)}',
          file=sys.stderr)
    sys.exit(2)
  # Imported here, after the name is known good: a launcher defines its flags on import.
  from absl import app  # pylint: disable=g-import-not-at-top
  from cnn_zoo import cli  # pylint: disable=g-import-not-at-top
  launcher = importlib.import_module(COMMANDS[name])
  app.run(launcher.main, argv=[f'{PROG} {name}', *argv[2:]], flags_parser=cli.parse_flags)
