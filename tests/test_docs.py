"""The documents point at things that exist: every test they cite as `tests/FILE.py::NAME` is
defined in that file, every relative link reaches a file (and a heading of it, where it names one),
and WORKSPACE.md links every page of docs/."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, 'docs')
PAGES = ['README.md', 'WORKSPACE.md'] + sorted(
    os.path.join('docs', f) for f in os.listdir(DOCS) if f.endswith('.md'))

CITED_TEST = re.compile(r'tests/(test_\w+\.py)::(test_\w+)')
LINK = re.compile(r'\]\(([^)\s]+)\)')


def prose(page: str) -> str:
  """The page without its fenced code blocks (a `# comment` there is not a heading)."""
  with open(os.path.join(ROOT, page), encoding='utf-8') as f:
    return re.sub(r'^\s*```.*?^\s*```', '', f.read(), flags=re.M | re.S)


def anchor(heading: str) -> str:
  """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
  return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def anchors(page: str) -> set[str]:
  return {anchor(h) for h in re.findall(r'^#+ (.+)$', prose(page), flags=re.M)}


def defined_tests(test_file: str) -> set[str]:
  with open(os.path.join(ROOT, 'tests', test_file), encoding='utf-8') as f:
    return set(re.findall(r'^\s*def (test_\w+)\(', f.read(), flags=re.M))


@pytest.mark.parametrize('page', PAGES)
def test_every_cited_test_is_defined_in_its_file(page):
  with open(os.path.join(ROOT, page), encoding='utf-8') as f:
    cited = CITED_TEST.findall(f.read())
  missing = [f'tests/{file}::{name}' for file, name in cited
             if not os.path.exists(os.path.join(ROOT, 'tests', file))
             or name not in defined_tests(file)]
  assert not missing, f'{page} cites tests that do not exist: {missing}'


@pytest.mark.parametrize('page', PAGES)
def test_every_relative_link_reaches_a_file_and_its_heading(page):
  broken = []
  for target in LINK.findall(prose(page)):
    if re.match(r'[a-z]+:', target):
      continue  # http:, https:, mailto:
    path, _, fragment = target.partition('#')
    linked = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
    if not os.path.exists(os.path.join(ROOT, linked)):
      broken.append(target)
    elif fragment and linked.endswith('.md') and fragment not in anchors(linked):
      broken.append(target)
  assert not broken, f'{page} links to what is not there: {broken}'


def test_the_index_links_every_page_of_docs():
  linked = {os.path.normpath(t.partition('#')[0]) for t in LINK.findall(prose('WORKSPACE.md'))}
  pages = {p for p in PAGES if p.startswith('docs')}
  assert pages <= linked, f'WORKSPACE.md does not link {sorted(pages - linked)}'
