"""The library's layers point one way (README, "Layout"): each module imports only its own layer
and the layers below it, deferred imports included, and nothing in cnn_zoo/ reaches the launchers."""

import ast
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Bottom to top. Within the second layer, models and data are independent of each other;
# torchvision's weights (pretrained) sit over both.
LAYERS = (
    ('foundation', ('cnn_zoo.errors', 'cnn_zoo.escape', 'cnn_zoo.output_paths', 'cnn_zoo.parallel',
                    'cnn_zoo.run_files')),
    ('models', ('cnn_zoo.models',)),
    ('data', ('cnn_zoo.data',)),
    ('pretrained', ('cnn_zoo.pretrained',)),
    ('train', ('cnn_zoo.train',)),
    ('applications', ('cnn_zoo.benchmark', 'cnn_zoo.cli', 'cnn_zoo.predict', 'cnn_zoo.report',
                      'cnn_zoo.reproduction', 'cnn_zoo.slurm', 'cnn_zoo.sweep',
                      'cnn_zoo.visualize')),
)
# Rank of each layer: models and data share one, and neither may import the other.
RANK = {'foundation': 0, 'models': 1, 'data': 1, 'pretrained': 2, 'train': 3, 'applications': 4}


def layer_of(module: str) -> str | None:
  for name, prefixes in LAYERS:
    if any(module == p or module.startswith(p + '.') for p in prefixes):
      return name
  return None


def library_modules() -> dict[str, str]:
  """Module name -> path of every file under cnn_zoo/."""
  found = {}
  for folder, _, files in os.walk(os.path.join(ROOT, 'cnn_zoo')):
    for file in files:
      if file.endswith('.py'):
        path = os.path.join(folder, file)
        name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.').removesuffix('.__init__')
        found[name] = path
  return found


def imports_of(path: str) -> list[tuple[int, str]]:
  """(line, module) of every import in a file, at any depth: `from a.b import c` gives a.b.c
  where that is a module of the library, else a.b."""
  modules = library_modules()
  out = []
  for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
    if isinstance(node, ast.Import):
      out += [(node.lineno, alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for alias in node.names:
        full = f'{node.module}.{alias.name}'
        out.append((node.lineno, full if full in modules else node.module))
  return out


def upward_imports() -> list[str]:
  problems = []
  for module, path in sorted(library_modules().items()):
    own = layer_of(module)
    if module == 'cnn_zoo':
      continue
    if own is None:
      problems.append(f'{module}: in no layer; add it to tests/test_layering.py LAYERS')
      continue
    for line, imported in imports_of(path):
      if imported.split('.')[0] == 'experiments':
        problems.append(f'{module}:{line} imports the launcher {imported}')
      if not imported.startswith('cnn_zoo.'):
        continue
      theirs = layer_of(imported)
      if theirs is None:
        problems.append(f'{module}:{line} imports {imported}, in no layer')
      elif RANK[theirs] > RANK[own] or (RANK[theirs] == RANK[own] and theirs != own):
        problems.append(f'{module}:{line} ({own}) imports {imported} ({theirs})')
  return problems


def test_every_import_points_down():
  assert upward_imports() == []


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch):
  """The check itself can fail: a model importing the train package is reported."""
  bad = tmp_path / 'bad.py'
  bad.write_text('def f():\n  from cnn_zoo.train import loop\n  return loop\n')
  real = library_modules()
  monkeypatch.setattr(sys.modules[__name__], 'library_modules',
                      lambda: {**real, 'cnn_zoo.models.bad': str(bad)})
  assert upward_imports() == ['cnn_zoo.models.bad:2 (models) imports cnn_zoo.train.loop (train)']


@pytest.mark.parametrize('module', ['cnn_zoo.sweep', 'cnn_zoo.report'])
def test_the_library_names_no_launcher_module(module):
  """A sweep is given its training command by experiments.sweep; the library spells none."""
  path = library_modules()[module]
  constants = [n.value for n in ast.walk(ast.parse(open(path, encoding='utf-8').read()))
               if isinstance(n, ast.Constant) and isinstance(n.value, str)]
  assert not [c for c in constants if c.startswith('experiments.')]
