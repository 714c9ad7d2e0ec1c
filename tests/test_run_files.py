"""A run directory's files have one owner (cnn_zoo/run_files.py): no other module names them, every
reader of metrics.jsonl applies its one rule for torn and undecodable lines, JSON objects are read
with one rule for damage, and every write is whole."""

import ast
import json
import os
import re

import pytest

from cnn_zoo import errors, report, run_files
from cnn_zoo.train import writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OWNER = os.path.join(ROOT, 'cnn_zoo', 'run_files.py')
NAMES = (run_files.CONFIG, run_files.RESULTS, run_files.METRICS, run_files.CONV_IMPL,
         run_files.DATASET, run_files.CONVERTED, run_files.TRACKERS, run_files.CHECKPOINTS,
         run_files.DAMAGED, run_files.TENSORBOARD)  # not .lock: TFDS has its own


def _docstrings(tree) -> set[int]:
  """ids of the docstring constants of a module, its classes and functions: prose, not names."""
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      body = node.body
      if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        found.add(id(body[0].value))
  return found


def _names_a_run_file(text: str) -> bool:
  """Whether a string literal is a run file's name, or a path or temporary file of one."""
  return any(text == name or text.endswith(('/' + name, os.sep + name)) or
             text.startswith(name + '.') or text.endswith('/' + name + run_files.TMP)
             for name in NAMES)


def literals(path: str) -> list[str]:
  """'path:line: literal' for every string literal in `path`, f-strings' parts included, that
  names a run file."""
  tree = ast.parse(open(path, encoding='utf-8').read())
  skip = _docstrings(tree)
  return [f'{os.path.relpath(path, ROOT)}:{node.lineno}: {node.value!r}' for node in ast.walk(tree)
          if isinstance(node, ast.Constant) and isinstance(node.value, str) and
          id(node) not in skip and _names_a_run_file(node.value)]


def sources() -> list[str]:
  found = []
  for top in ('cnn_zoo', 'experiments'):
    for folder, _, files in os.walk(os.path.join(ROOT, top)):
      found += [os.path.join(folder, f) for f in files if f.endswith('.py')]
  return sorted(p for p in found if p != OWNER)


def test_no_module_but_the_owner_names_a_run_file():
  assert [line for path in sources() for line in literals(path)] == []


def test_the_scan_catches_a_name_and_leaves_prose_alone(tmp_path):
  bad = tmp_path / 'bad.py'
  bad.write_text('"""Reads config.json."""\nimport os\n\n\ndef f(w):\n'
                 '  """Prose naming metrics.jsonl is fine."""\n'
                 "  print('its results.json is damaged')\n"
                 "  return (os.path.join(w, 'config.json'), f'{w}/metrics.jsonl',\n"
                 "          'results.json.tmp')\n")
  assert sorted(line.split(': ', 1)[1] for line in literals(str(bad))) == [
      "'/metrics.jsonl'", "'config.json'", "'results.json.tmp'"]


# The one rule for lines of metrics.jsonl ----------------------------------------------------------

LINES = {  # line -> whether it is a record
    b'{"step": 1, "split": "train", "loss": 0.5}\n': True,
    b'{"step": 2, "split": "test"}\n': True,
    b'{"step": 3, "split": "train"}': False,  # whole JSON, but its newline never written
    b'{"step": 4, "spl': False,  # torn
    b'\xff\xfe not utf-8\n': False,
    b'not json\n': False,
    b'[1, 2]\n': False,
    b'{"step": "5", "split": "train"}\n': False,
    b'{"step": true, "split": "train"}\n': False,
    b'{"step": 6}\n': False,
    b'\n': False,
}


@pytest.mark.parametrize('line', list(LINES))
def test_a_line_is_a_record_only_when_whole_json_and_shaped_as_one(line):
  assert (run_files.record_of(line) is not None) == LINES[line]


def test_the_report_and_a_resume_keep_the_same_lines(tmp_path):
  """Both readers of metrics.jsonl go through the one rule: the comparison report shows exactly
  the records a resumed run keeps."""
  run = tmp_path / 'sweep' / 'run'
  run.mkdir(parents=True)
  good = [line for line, ok in LINES.items() if ok]
  middle = [line for line, ok in LINES.items() if not ok and line.endswith(b'\n')]
  torn = b'{"step": 4, "spl'
  (run / run_files.METRICS).write_bytes(good[0] + b''.join(middle) + good[1] + torn)
  (run / run_files.CONFIG).write_text(json.dumps({'model': 'lenet5', 'dataset': 'digits'}))
  shown = report.collect(str(tmp_path / 'sweep'))[0].metrics
  assert shown == [json.loads(line) for line in good]
  writer = writers.MetricWriter(str(run), resume_step=10**6)
  writer.close()
  assert writer.kept == shown
  assert (run / run_files.METRICS).read_bytes() == b''.join(good)  # the rest dropped on resume


# Reading JSON objects -----------------------------------------------------------------------------

@pytest.mark.parametrize('content,reason', [
    (b'{"half', 'JSONDecodeError: Unterminated string starting at: line 1 column 2 (char 1)'),
    (b'\xff{}', "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0: invalid "
                'start byte'),
    (b'[1, 2]', 'ValueError: a JSON list, not an object'),
])
def test_a_damaged_json_file_is_unreadable_naming_why(tmp_path, content, reason):
  path = tmp_path / run_files.RESULTS
  path.write_bytes(content)
  with pytest.raises(run_files.Unreadable) as e:
    run_files.read_object(str(path))
  assert str(e.value) == f'{path} is unreadable ({reason})' and e.value.reason == reason


def test_an_absent_json_file_is_none_and_a_good_one_its_object(tmp_path):
  assert run_files.read_object(str(tmp_path / run_files.CONFIG)) is None
  run_files.write_json(str(tmp_path / run_files.CONFIG), {'model': 'lenet5', 'n': [1, 2]})
  assert run_files.read_object(str(tmp_path / run_files.CONFIG)) == {'model': 'lenet5', 'n': [1, 2]}


# The one atomic write -----------------------------------------------------------------------------

def test_a_write_replaces_the_file_whole_and_leaves_no_temporary_file(tmp_path):
  path = tmp_path / 'out.json'
  path.write_text('old')
  run_files.write_json(str(path), {'a': 1})
  assert json.loads(path.read_text()) == {'a': 1} and os.listdir(tmp_path) == ['out.json']


@pytest.mark.parametrize('shared', [False, True])
def test_a_write_that_fails_midway_leaves_the_old_file_and_no_part(tmp_path, shared):
  path = tmp_path / 'out.bin'
  path.write_bytes(b'old and whole')

  def fill(f):
    f.write(b'half of the new')
    raise RuntimeError('cut')

  with pytest.raises(RuntimeError, match='cut'):
    run_files.write_file(str(path), fill, shared=shared)
  assert path.read_bytes() == b'old and whole' and os.listdir(tmp_path) == ['out.bin']


def test_a_failed_write_names_the_path_when_told_what_it_is(tmp_path):
  path = tmp_path / 'no_such_dir' / 'out.json'
  with pytest.raises(OSError):
    run_files.write_text(str(path), 'x')
  with pytest.raises(errors.StorageError, match=re.escape(f'--json: cannot write {path} (')):
    run_files.write_text(str(path), 'x', '--json')


def test_a_write_never_goes_through_a_link_planted_at_its_temporary_file(tmp_path):
  victim = tmp_path / 'precious.txt'
  victim.write_text('not yours\n')
  os.symlink(victim, tmp_path / (run_files.RESULTS + run_files.TMP))
  with pytest.raises(errors.WorkdirError, match='is a symbolic link'):
    run_files.write_json(str(tmp_path / run_files.RESULTS), {'a': 1})
  assert victim.read_text() == 'not yours\n'
  assert not (tmp_path / run_files.RESULTS).exists()
