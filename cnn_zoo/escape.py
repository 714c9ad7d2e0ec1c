"""Names from users' files (class folders, run directories, config strings) made safe to show: on a
terminal, in a Markdown table, in a CSV cell a spreadsheet opens, in JSON inside an HTML page.

A folder name can hold anything but '/' and NUL: terminal escape sequences, '|' and newlines,
'=HYPERLINK(...)', '</script>'. Each function keeps the text readable and shows what it holds.
"""

import json
import math
import unicodedata

_NAMED = {'\n': '\\n', '\r': '\\r', '\t': '\\t'}
# Cells a spreadsheet reads as a formula (OWASP's list: '=', '+', '-', '@', tab, carriage return).
_FORMULA_STARTS = ('=', '+', '-', '@', '\t', '\r')
_HTML_JSON = {'<': '\\u003c', '>': '\\u003e', '&': '\\u0026', '\u2028': '\\u2028',
              '\u2029': '\\u2029'}


def _escaped(c: str) -> str:
  if c in _NAMED:
    return _NAMED[c]
  code = ord(c)
  return f'\\x{code:02x}' if code < 0x100 else f'\\u{code:04x}' if code < 0x10000 else \
      f'\\U{code:08x}'


def terminal(text: str) -> str:
  """`text` with control and format characters (ESC, CR, bidi overrides, U+2028 ...) written as
  escapes (\\x1b, \\r, \\u202e), so that printing it cannot move the cursor or recolour the
  terminal."""
  return ''.join(_escaped(c) if unicodedata.category(c)[0] == 'C' or c in '\u2028\u2029' else c
                 for c in str(text))


def markdown(text: str) -> str:
  """`text` as one Markdown table cell: '\\' and '|' escaped, newlines and other control
  characters shown as escapes."""
  return terminal(str(text).replace('\\', '\\\\').replace('|', '\\|'))


def _is_number(text: str) -> bool:
  try:
    return math.isfinite(float(text))
  except ValueError:
    return False


def csv_cell(value):
  """A CSV value a spreadsheet shows as text: a text cell that starts like a formula gets a
  leading "'" (as spreadsheets themselves write it); numbers, and text that is a number ('-3'),
  stay as they are."""
  if isinstance(value, str) and value.startswith(_FORMULA_STARTS) and not _is_number(value):
    return "'" + value
  return value


def json_for_html(data) -> str:
  """`data` as JSON to embed in an HTML <script> element: '<', '>', '&', U+2028 and U+2029 as
  \\u escapes, so no string can end the element, open a comment or break a JavaScript line."""
  text = json.dumps(data, separators=(',', ':'))
  for c, escape in _HTML_JSON.items():  # outside strings JSON has none of these: always valid
    text = text.replace(c, escape)
  return text
