"""The explorer page in a real headless Chromium, for its test and its screenshots.

Selenium drives the system's browser (Debian's `chromium` and `chromium-driver`, which `.ci/run`
installs): nothing is downloaded at run time. Mouse input goes through Chromium's own input events,
so drawing and hovering run the page's real handlers.
"""

import os
import shutil

from cnn_zoo import errors

BROWSERS = ('chromium', 'chromium-browser', 'google-chrome')
WINDOW = (1500, 1100)  # CSS pixels: the whole page of a LeNet-5 without scrolling


def _find(names) -> str | None:
  return next((path for path in map(shutil.which, names) if path), None)


def missing() -> str | None:
  """Why headless Chromium cannot run here (a line naming what to install), or None."""
  try:
    import selenium  # noqa: F401  pylint: disable=unused-import,g-import-not-at-top
  except ImportError:
    return 'selenium is not installed (pip install -r requirements.txt)'
  if not _find(BROWSERS):
    return 'no Chromium found (apt-get install chromium chromium-driver)'
  if not _find(['chromedriver']):
    return 'no chromedriver found (apt-get install chromium-driver)'
  return None


def chromium(window: tuple[int, int] = WINDOW):
  """A headless Chromium under Selenium; the caller quits it."""
  reason = missing()
  if reason:
    raise errors.NotFoundError(f'headless Chromium is unavailable: {reason}')
  from selenium import webdriver  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.chrome.service import Service  # pylint: disable=g-import-not-at-top
  options = webdriver.ChromeOptions()
  options.binary_location = _find(BROWSERS)  # the system browser: Selenium downloads nothing
  for arg in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
              f'--window-size={window[0]},{window[1]}', '--force-device-scale-factor=1',
              '--hide-scrollbars'):
    options.add_argument(arg)
  options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
  return webdriver.Chrome(options=options, service=Service(executable_path=_find(['chromedriver'])))


def open_page(driver, path: str, timeout_s: float = 20) -> None:
  """Loads the explorer page at `path` and waits until it has drawn its first example."""
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top
  driver.get('file://' + os.path.abspath(path))
  WebDriverWait(driver, timeout_s).until(
      lambda d: d.execute_script('return !!(window.explorer && window.explorer.ready)'))
  errors_logged = [e['message'] for e in driver.get_log('browser') if e['level'] == 'SEVERE']
  if errors_logged:
    raise RuntimeError(f'the page logged errors: {errors_logged}')


def _offset(driver, element, x_css: float, y_css: float) -> tuple[int, int]:
  """Selenium's offsets are from the element's centre; these are from its top-left corner."""
  width, height = driver.execute_script(
      'const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];', element)
  return int(round(x_css - width / 2)), int(round(y_css - height / 2))


def hover(driver, layer: str, map_index: int, row: int, col: int) -> None:
  """Moves the mouse onto pixel (row, col) of map `map_index` of `layer` (dense layers: map 0)."""
  from selenium.webdriver.common.action_chains import ActionChains  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  canvas = driver.find_element(By.CSS_SELECTOR, f'canvas[data-layer="{layer}"][data-map="{map_index}"]')
  scale = driver.execute_script('return arguments[0].clientWidth / arguments[0].width;', canvas)
  dx, dy = _offset(driver, canvas, (col + 0.5) * scale, (row + 0.5) * scale)
  ActionChains(driver).move_to_element_with_offset(canvas, dx, dy).perform()


def hover_output(driver, node: int) -> None:
  from selenium.webdriver.common.action_chains import ActionChains  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  bar = driver.find_element(By.CSS_SELECTOR, f'.bar[data-node="{node}"]')
  ActionChains(driver).move_to_element(bar).perform()


def draw(driver, strokes) -> None:
  """Draws strokes on the pad with the mouse: each a list of (x, y) in the model's input pixels."""
  from selenium.webdriver.common.action_chains import ActionChains  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  pad = driver.find_element(By.ID, 'pad')
  scale = driver.execute_script('return arguments[0].clientWidth / arguments[0].width;', pad)
  for stroke in strokes:
    points = [_offset(driver, pad, x * scale, y * scale) for x, y in stroke]
    actions = ActionChains(driver, duration=10)
    actions.move_to_element_with_offset(pad, *points[0]).click_and_hold()
    for a, b in zip(points, points[1:]):
      actions.move_by_offset(b[0] - a[0], b[1] - a[1])
    actions.release().perform()


def highlights(driver, selector: str) -> list[dict]:
  """The page's highlight boxes matching `selector`: layer, map, row, col, rows, cols."""
  return driver.execute_script(
      'return Array.from(document.querySelectorAll(arguments[0]), (e) => ({layer: e.dataset.layer, '
      'map: +e.dataset.map, row: +e.dataset.row, col: +e.dataset.col, rows: +e.dataset.rows, '
      'cols: +e.dataset.cols}));', selector)


def agreement(driver, run, page_path: str, count: int = 20) -> dict:
  """Feeds the page the first `count` test images of the run and compares every layer it computes
  with JAX's (`activations.capture`): {'max_abs_diff': {layer: worst}, 'same_prediction': n,
  'count': count, 'forward_ms': mean of 200 passes in the page}."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from cnn_zoo.visualize import activations, explorer  # pylint: disable=g-import-not-at-top
  open_page(driver, page_path)
  images = run.dataset.test.images[:count]
  worst, same = {}, 0
  for image, pad in zip(images, explorer.pad_values(run, images)):
    driver.execute_script('window.explorer.setInput(arguments[0]);', pad.ravel().tolist())
    page = driver.execute_script('return window.explorer.layers();')
    reference = activations.capture(run.model, run.variables, run.inputs(image[None])).layers
    if sorted(layer.name for layer in reference) != sorted(page):  # the driver sorts keys
      raise RuntimeError(f'the page computes layers {sorted(page)}, the model '
                           f'{[layer.name for layer in reference]}')
    for layer in reference:
      diff = np.abs(np.asarray(page[layer.name], np.float32) - layer.values.ravel())
      worst[layer.name] = max(worst.get(layer.name, 0.0), float(diff.max()))
    same += driver.execute_script('return window.explorer.prediction();') == \
        int(np.argmax(reference[-1].values))
  driver.execute_script('window.explorer.timeForward(20);')  # warm up V8's compiler first
  ms = driver.execute_script('return window.explorer.timeForward(200);')
  return {'max_abs_diff': worst, 'same_prediction': same, 'count': len(images), 'forward_ms': ms}


def digit_two(box: list[int]) -> list[list[tuple[float, float]]]:
  """Strokes of a handwritten 2 in the pad's drawable box [top, left, height, width]."""
  import math  # pylint: disable=g-import-not-at-top
  top, left, height, width = box
  at = lambda x, y: (left + x * width / 28, top + y * height / 28)  # MNIST's 28x28 layout
  arc = [at(14 + 6 * math.cos(math.radians(a)), 10 - 6 * math.sin(math.radians(a)))
         for a in range(160, -50, -15)]
  return [arc + [at(8, 22), at(21, 22)]]


def largest(driver, layer: str) -> tuple[int, int, int]:
  """(map, row, col) of the largest value of a map layer on the page now."""
  return tuple(driver.execute_script(
      'const L = window.explorer.layers()[arguments[0]], [, w, c] = window.explorer.shape(arguments[0]);'
      'let best = 0; L.forEach((v, i) => { if (v > L[best]) best = i; });'
      'return [best % c, Math.floor(best / (w * c)), Math.floor(best / c) % w];', layer))


def screenshots(page_path: str, out_dir: str) -> list[tuple[str, int]]:
  """PNG screenshots of the page: a 2 drawn on the pad, then the mouse on the pool1 pixel of
  largest value with its 2x2 window highlighted. Returns [(path, bytes)]."""
  driver = chromium()
  written = []
  try:
    open_page(driver, page_path)
    driver.find_element('id', 'clear').click()
    box = driver.execute_script('return JSON.parse(document.getElementById("explorer-data")'
                                '.textContent).input.box;')
    draw(driver, digit_two(box))
    for name in ('explorer_drawing.png', 'explorer_pool_hover.png'):
      if name == 'explorer_pool_hover.png':
        hover(driver, 'pool1', *largest(driver, 'pool1'))
      path = os.path.join(out_dir, name)
      driver.save_screenshot(path)
      written.append((path, os.path.getsize(path)))
  finally:
    driver.quit()
  return written
