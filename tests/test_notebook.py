"""The notebook (issue 34): kept without outputs, and run top to bottom in a real Jupyter kernel,
as a reader would run it."""

import os

import pytest

nbclient = pytest.importorskip('nbclient')  # requirements.txt pins it; the extra [notebook]
nbformat = pytest.importorskip('nbformat')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, 'notebooks', 'how_a_convnet_sees.ipynb')


def test_the_notebook_is_kept_without_outputs():
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(notebook)
  code = [cell for cell in notebook.cells if cell.cell_type == 'code']
  assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_the_notebook_runs_and_ends_in_a_prediction(tmp_path, monkeypatch):
  # The kernel imports this checkout's cnn_zoo (installed, it would import the installed one).
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join(
      p for p in (ROOT, os.environ.get('PYTHONPATH')) if p))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(notebook, timeout=300, kernel_name='python3',
                          resources={'metadata': {'path': str(tmp_path)}}).execute()
  code = [cell for cell in notebook.cells if cell.cell_type == 'code']
  text = lambda cell: ''.join(o.get('text', '') for o in cell.outputs if o.output_type == 'stream')
  images = lambda cell: sum('image/png' in o.get('data', {}) for o in cell.outputs)
  # Each figure shown: convolution, kernels, ReLU, pooling, then feature maps and filters.
  assert [images(cell) for cell in code] == [0, 0, 1, 1, 1, 1, 0, 2, 0]
  accuracy = float(text(code[6]).split('test accuracy ')[1].split()[0])
  assert accuracy > 0.8, text(code[6])
  label = text(code[1]).split()[1].rstrip(',')
  prediction = text(code[8]).splitlines()[1].split()
  assert prediction[0] == '1.' and prediction[1] == label, text(code[8])
  assert all(o.output_type != 'error' for cell in code for o in cell.outputs)
