"""The picks browser in a real headless Chromium: slider, counts, circles, colours, keys.

Skipped where Chromium, chromedriver or selenium is missing (``apt-get install chromium
chromium-driver``; selenium is in the test extra).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from browser_helpers import (expected_count, large_browser, page_data,  # noqa: F401
                             synthetic_run)  # fixtures
from selfpick.report.browser import STEPS, write_browser
from selfpick.report.figures import FP_COLOUR, MISSED_COLOUR, TP_COLOUR

pytestmark = pytest.mark.browser

CHROMEDRIVER = Path("/usr/bin/chromedriver")


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def driver():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    if not CHROMEDRIVER.is_file():
        pytest.skip(f"chromedriver not installed at {CHROMEDRIVER}")
    binary = _chromium()
    if binary is None:
        pytest.skip("Chromium is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--allow-file-access-from-files", "--window-size=1440,900"):
        options.add_argument(arg)
    drv = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    drv.set_page_load_timeout(120)
    yield drv
    drv.quit()


def _open(driver, folder: Path, fragment: str = "") -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get((folder / "index.html").resolve().as_uri() + fragment)
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script("return document.body.dataset.ready === '1' && "
                                   "document.getElementById('svg').dataset.shown !== undefined"))


def _set_threshold(driver, step: int) -> None:
    driver.execute_script(
        "var s = document.getElementById('thr'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('input', {bubbles: true}));", step)


def _js(driver, script: str):
    return driver.execute_script("return " + script)


def _circles(driver, selector: str = "#circles circle") -> int:
    return _js(driver, f"document.querySelectorAll('{selector}').length")


def _total(driver) -> int:
    return int(_js(driver, "document.getElementById('total').dataset.count"))


def _severe_console_errors(driver) -> list:
    try:
        logs = driver.get_log("browser")
    except Exception:  # noqa: BLE001 - not every driver keeps a console log
        return []
    return [e for e in logs if e.get("level") == "SEVERE"]


@pytest.fixture(scope="module")
def truth_page(synthetic_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("chromium") / "browser"
    write_browser(synthetic_run.folder, synthetic_run.images, out, truth=synthetic_run.truth,
                  progress=False)
    return out


def test_slider_counts_circles_and_truth_colours(driver, truth_page, synthetic_run, tmp_path):
    _open(driver, truth_page)
    data = page_data(truth_page)
    scores = synthetic_run.picks["score"].to_numpy()
    name = data["names"][0]
    mine = synthetic_run.picks.loc[synthetic_run.picks.micrograph == name, "score"].to_numpy()
    assert _js(driver, "document.getElementById('name').textContent") == name

    seen = {}
    for step in (0, 50, 80):
        _set_threshold(driver, step)
        t = step / STEPS
        assert _js(driver, "document.getElementById('thrval').textContent") == f"{t:.2f}"
        assert _total(driver) == expected_count(scores, t)
        text = _js(driver, "document.getElementById('total').textContent")
        assert text.startswith(f"{expected_count(scores, t):,} picks"), text
        # Only the large view draws circles: one per shown pick, plus the missed particles.
        assert _circles(driver) == expected_count(mine, t) == data["cnt"][0][step]
        tp = _circles(driver, "#circles circle.tp")
        assert tp == data["tp"][0][step]
        assert _circles(driver, "#circles circle.fp") == data["cnt"][0][step] - tp
        assert _circles(driver, "#truthg circle.missed") == data["nt"][0] - tp
        # The thumbnails' counts follow the slider too.
        labels = _js(driver, "Array.from(document.querySelectorAll('.thumb .ct'))"
                             ".map(function (e) { return +e.textContent; })")
        assert labels == [c[step] for c in data["cnt"]]
        cmd = _js(driver, "document.getElementById('cmd').value")
        assert f"--threshold {t:.2f}" in cmd and "--model models/best_model.pt" in cmd
        seen[step] = _circles(driver)
    assert seen[0] > seen[50] > seen[80]

    _set_threshold(driver, 50)
    colours = {(c["cls"], c["stroke"]) for c in _js(
        driver, "Array.from(document.querySelectorAll('#svg circle')).map(function (e) {"
                " return {cls: e.getAttribute('class'), stroke: e.getAttribute('stroke')}; })")}
    assert colours == {("pick tp", TP_COLOUR), ("pick fp", FP_COLOUR), ("missed", MISSED_COLOUR)}
    totals = _js(driver, "document.getElementById('truthTotal').dataset")
    tp_all = sum(t[50] for t in data["tp"])
    assert int(totals["tp"]) == tp_all
    assert int(totals["missed"]) == sum(data["nt"]) - tp_all

    # Colour by score instead: no true/false positives, no missed circles.
    driver.execute_script("document.querySelector('input[value=score]').click()")
    assert _circles(driver, "#circles circle.tp") == 0
    assert _circles(driver, "#truthg circle") == 0
    assert _circles(driver) == data["cnt"][0][50]
    driver.execute_script("document.querySelector('input[value=match]').click()")
    driver.save_screenshot(str(tmp_path / "picks_browser.png"))
    assert (tmp_path / "picks_browser.png").stat().st_size > 10_000
    assert not _severe_console_errors(driver)


def test_keys_and_buttons_move_between_micrographs(driver, truth_page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    _open(driver, truth_page)
    data = page_data(truth_page)
    body = driver.find_element(By.TAG_NAME, "body")

    def at(i: int) -> bool:
        return (_js(driver, "document.getElementById('name').textContent") == data["names"][i]
                and _js(driver, "document.getElementById('svg').dataset.shown")
                == str(data["cnt"][i][_js(driver, "+document.getElementById('thr').value")]))

    body.send_keys(Keys.ARROW_RIGHT)
    WebDriverWait(driver, 20).until(lambda d: at(1))
    assert _js(driver, "document.getElementById('pos').textContent") == f"2 / {len(data['names'])}"
    body.send_keys(Keys.END)
    WebDriverWait(driver, 20).until(lambda d: at(len(data["names"]) - 1))
    driver.find_element(By.ID, "prev").click()
    WebDriverWait(driver, 20).until(lambda d: at(len(data["names"]) - 2))
    thr = int(_js(driver, "document.getElementById('thr').value"))
    body.send_keys(Keys.ARROW_UP)
    assert int(_js(driver, "document.getElementById('thr').value")) == thr + 1
    # A thumbnail click shows that micrograph; the address keeps micrograph and threshold.
    driver.execute_script("document.querySelectorAll('.thumb')[0].click()")
    WebDriverWait(driver, 20).until(lambda d: at(0))
    WebDriverWait(driver, 10).until(lambda d: f"mic={data['names'][0]}" in d.current_url)
    driver.get(driver.current_url.split("#")[0] + f"#t=0.70&mic={data['names'][2]}")
    WebDriverWait(driver, 20).until(lambda d: at(2))
    assert int(_js(driver, "document.getElementById('thr').value")) == 70


def test_large_page_slider_updates_every_count(driver, large_browser, tmp_path):
    _open(driver, large_browser.output)
    scores = large_browser.picks["score"].to_numpy()
    first = large_browser.picks.loc[large_browser.picks.micrograph == large_browser.names[0],
                                    "score"].to_numpy()
    assert _total(driver) == len(scores)  # no run threshold: the slider starts at 0
    for step in (30, 75, 100):
        _set_threshold(driver, step)
        assert _total(driver) == expected_count(scores, step / STEPS)
        assert _circles(driver) == expected_count(first, step / STEPS)
    # Thumbnails load lazily: far fewer than 1,000 images requested.
    loaded = _js(driver, "Array.from(document.querySelectorAll('.thumb img'))"
                         ".filter(function (i) { return i.getAttribute('src'); }).length")
    assert 0 < loaded < 200
    driver.save_screenshot(str(tmp_path / "large.png"))
    assert not _severe_console_errors(driver)


def test_picks_without_truth_are_coloured_by_score(driver, synthetic_run, tmp_path):
    out = write_browser(synthetic_run.folder, synthetic_run.images, tmp_path / "b",
                        particle_diameter=synthetic_run.diameter, progress=False).output
    _open(driver, out)
    strokes = _js(driver, "Array.from(document.querySelectorAll('#circles circle'))"
                          ".map(function (e) { return e.getAttribute('stroke'); })")
    assert strokes and all(s.startswith("rgb(") for s in strokes)
    assert len(set(strokes)) > 3  # a colour scale, not one colour
    assert _js(driver, "document.getElementById('truthTotal').textContent") == ""
    assert np.all([s not in (TP_COLOUR, FP_COLOUR) for s in strokes])
