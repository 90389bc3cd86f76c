"""The built smoke book, opened in a real browser (Debian's headless chromium, driven through chromedriver by
selenium) at desktop and phone width, the way a reader sees it, with nothing reachable but the local files.

For every page: the equations are typeset (no raw TeX left in the text), every image loaded and sits in a
numbered figure, table percentages have one decimal, no cell shows an error, no internal link or anchor is broken,
the page never scrolls sideways, and no request leaves the machine. ``make test`` installs chromium and
chromium-driver with apt-get when they are missing (README).
Screenshots of every page at both widths go to ``$XLPRUNE_SCREENSHOTS`` when it is set (to look at them).
"""
import json
import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

pytestmark = pytest.mark.slow

WIDTHS = {"desktop": 1280, "phone": 400}
LOCAL_SCHEMES = ("file", "data", "blob", "about", "chrome", "devtools")
RAW_TEX = re.compile(r"\$\$|\\begin\{|\\frac|\\\(|\\\[|\\mathrm|\\sum_")

# what the reader sees as text: the page without code, rendered math and the (hidden) MathJax sources
VISIBLE_TEXT = """
const clone = document.querySelector('main, article, body').cloneNode(true);
clone.querySelectorAll('pre, code, mjx-container, script, style, .MathJax_Preview').forEach(e => e.remove());
return clone.innerText;
"""
PAGE_STATE = r"""
const done = arguments[arguments.length - 1];
const ready = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
ready.then(() => done({
  images: Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0]),
  errors: document.querySelectorAll('.output.traceback, .output.error, div.output_error').length,
  overflow: document.documentElement.scrollWidth - window.innerWidth,
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  math: document.querySelectorAll('mjx-container').length,
  percents: Array.from(document.querySelectorAll('td, th')).map(c => c.innerText)
    .filter(t => /\d\.\d{2,}\s*%/.test(t)),
  unnumbered: Array.from(document.querySelectorAll('figure')).filter(f => !f.querySelector('.caption-number'))
    .map(f => (f.querySelector('figcaption') || f).innerText.slice(0, 60)),
  bare: Array.from(document.querySelectorAll('main img, article img')).filter(i => !i.closest('figure'))
    .map(i => i.getAttribute('src')),
})).catch(e => done({failed: String(e)}));
"""


def _driver(width: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert browser and driver, ("the browser test needs Debian's chromium and chromium-driver: "
                                "apt-get install chromium chromium-driver (make test does it when they are missing)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={max(width, 500)},900", "--host-resolver-rules=MAP * ~NOTFOUND"):   # nothing resolves
        opts.add_argument(arg)
    if width < 500:   # a window is at least 500 px wide: a phone is emulated (its viewport, touch, mobile layout)
        opts.add_experimental_option("mobileEmulation", {"deviceMetrics": {"width": width, "height": 900,
                                                                           "pixelRatio": 1.0}})
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    d = webdriver.Chrome(service=Service(driver), options=opts)
    d.set_script_timeout(60)
    return d


# the page has finished loading and is not a redirect (the book's root index.html forwards with a meta refresh)
SETTLED = """return document.readyState === 'complete' && document.body !== null
    && !document.querySelector('meta[http-equiv="Refresh" i]');"""


def _open(driver, page: Path) -> None:
    """Open ``page`` and wait until the browser shows the page a reader ends up on, loaded: a redirect page is
    followed first (checking it mid-navigation would find no document body)."""
    from selenium.common.exceptions import JavascriptException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(page.as_uri())
    WebDriverWait(driver, 60, ignored_exceptions=(JavascriptException,)).until(lambda d: d.execute_script(SETTLED))


def _pages(html: Path) -> list[Path]:
    return sorted(p for p in html.rglob("*.html") if not {"_static", "_sources"} & set(p.relative_to(html).parts)
                  and p.name not in ("genindex.html", "search.html"))


def _requests(driver) -> set[str]:
    urls = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.add(message["params"]["request"]["url"])
    return urls


def _screenshot(driver, path: Path, width: int) -> None:
    """The whole page: the viewport is stretched to the page's height for the shot (DevTools protocol), then set
    back, so the next page is laid out at the width under test again."""
    import base64

    metrics = {"width": width, "deviceScaleFactor": 1, "mobile": width < 500}
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "height": min(height, 30000)})
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "height": 900})
    path.write_bytes(base64.b64decode(shot["data"]))


def _anchor_exists(target: Path, fragment: str) -> bool:
    text = target.read_text(errors="replace")
    return f'id="{fragment}"' in text or f"id='{fragment}'" in text or f'name="{fragment}"' in text


@pytest.mark.parametrize("view", list(WIDTHS))
def test_every_page_reads_offline_as_intended(smoke_html, view, tmp_path):
    html, proc = smoke_html
    assert proc.returncode == 0, proc.stdout[-2000:]
    pages = _pages(html)
    assert len(pages) >= 8, [p.name for p in pages]
    shots = Path(os.environ.get("XLPRUNE_SCREENSHOTS") or tmp_path)
    problems, typeset = [], 0
    driver = _driver(WIDTHS[view])
    try:
        for page in pages:
            name = str(page.relative_to(html))
            _open(driver, page)
            state = driver.execute_async_script(PAGE_STATE)
            assert "failed" not in state, (name, state)
            typeset += state["math"]
            text = driver.execute_script(VISIBLE_TEXT)
            if raw := RAW_TEX.findall(text):
                problems.append(f"{name}: raw TeX in the text: {sorted(set(raw))}")
            if broken := [src for src, ok in state["images"] if not ok]:
                problems.append(f"{name}: images that did not load: {broken[:3]}")
            if state["percents"]:
                problems.append(f"{name}: table percentages with more than one decimal: {state['percents'][:3]}")
            if state["unnumbered"]:
                problems.append(f"{name}: figures without a number: {state['unnumbered'][:3]}")
            if state["bare"]:
                problems.append(f"{name}: images outside a numbered figure: {state['bare'][:3]}")
            if state["errors"]:
                problems.append(f"{name}: {state['errors']} error outputs")
            if state["overflow"] > 1:
                problems.append(f"{name}: the page scrolls sideways by {state['overflow']} px at {view} width")
            for link in state["links"]:
                url = urlparse(link)
                if url.scheme != "file":
                    continue
                target = Path(unquote(url.path))
                if not target.is_file():
                    problems.append(f"{name}: broken link to {target.relative_to(html) if html in target.parents else target}")
                elif url.fragment and target.suffix == ".html" and not _anchor_exists(target, unquote(url.fragment)):
                    problems.append(f"{name}: link to a missing anchor {target.name}#{url.fragment}")
            if leaving := sorted(u for u in _requests(driver) if urlparse(u).scheme not in LOCAL_SCHEMES):
                problems.append(f"{name}: requests leaving the machine: {leaving[:3]}")
            shots.mkdir(parents=True, exist_ok=True)
            _screenshot(driver, shots / f"{name.replace('/', '_')[:-5]}-{view}.png", WIDTHS[view])
    finally:
        driver.quit()
    assert not problems, "\n".join(problems)
    assert typeset > 0, "no equation was typeset on any page"
