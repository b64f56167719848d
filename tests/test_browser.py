"""Browser tests (#26): the app as a user meets it, driven by Playwright on the system Chromium.

The browser is Debian's (`make browser` installs `chromium-headless-shell` with apt; nothing is
downloaded from a browser CDN). Without a Chromium or the `playwright` package every test here
SKIPS with the reason; `pytest -m "not browser"` leaves them out. GENSTUDIO_BROWSER=/path/to/chrome
picks another Chromium-family binary.

What runs: the app in-process on 127.0.0.1 (a free port) with the shipped checkpoints; the page
shows every registered tab (the flagship "Image → SVG" first); an empty submit and a corrupt upload
(a text file named .png) on the SVG tab show a readable error toast; and EVERY tab runs to a result:
it clicks the tab's first example, turns the
tab's settings down to the fastest the tab allows (fewer samples/steps/faces, no SVG refinement;
the point is the wiring, not the quality), presses the tab's button and waits for the result
element (image, gallery, 3D viewer) and the download to appear, with no error toast. About 50 s
here on 2 busy CPU cores, most of it loading the models.
"""
from __future__ import annotations

import os
import shutil
import socket
import time
from importlib.metadata import entry_points

import pytest

pytestmark = pytest.mark.browser

gr = pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[dev]')")
pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make install: it is a dev dependency)")

from apps.app import TAB_LABELS, ordered_tabs, tab_label  # noqa: E402

# Debian's headless shell first (package chromium-headless-shell), then the full browser (package chromium)
BROWSERS = ("/usr/lib/chromium/chromium-headless-shell", "chromium-headless-shell", "/usr/lib/chromium/chromium",
            "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
RUN_TIMEOUT_MS = 120_000  # per tab run, model loading included (generous: CI machines are slow, cores shared)
UI_TIMEOUT_MS = 30_000

# The fastest settings each tab allows: (number inputs of its sliders, checkboxes to untick, what the
# run's summary then says: the settings reached the run).
FAST = {
    "svg": ({}, ["refine (fit the numbers to the image; also try an empty canvas)"], "similar to your image (SSIM)"),
    "text2svg": ({"samples": 1, "sampling steps": 10}, [], "of 1 samples drew something"),
    "generate": ({"images per class": 1, "sampling steps": 10}, [], "× 1), "),
    "inpaint": ({"samples": 1}, [], "1 completion of a hole"),
    "video": ({"sampling steps": 4}, [], "predict: 16 frames"),
    "mesh": ({"max faces": 32}, [], "faces and"),
    "face": ({"faces (n)": 2}, [], "2 faces of the uploaded face's identity"),
    "tokenizer": ({}, [], "tokens ("),
    "shape": ({"shapes": 1}, [], "1 shape, "),
    "multiview": ({"sampling steps": 4}, [], "views of "),
}
# Each tab's result element, by its label (what must show up after a run) and what it must contain.
RESULT = {
    "svg": ("SVG rendering", "img"), "text2svg": ("samples (rendered SVGs)", "img"),
    "generate": ("one row per class", "img"), "inpaint": ("completions", "img"), "video": ("result", "img"),
    "mesh": ("MeshAnything output", "canvas"), "face": ("faces (caption", "img"), "tokenizer": ("reconstruction", "img"),
    "shape": ("shape 1", "canvas"), "multiview": ("views (caption", "img"),
}


def find_browser() -> tuple[str | None, str]:
    """(the Chromium binary to drive, or None; why not)."""
    chosen = os.environ.get("GENSTUDIO_BROWSER")
    if chosen:
        found = chosen if os.path.isabs(chosen) else shutil.which(chosen)
        if found and os.path.isfile(found) and os.access(found, os.X_OK):
            return found, ""
        return None, f"GENSTUDIO_BROWSER={chosen} is not an executable file"
    for name in BROWSERS:
        path = name if os.path.isabs(name) else shutil.which(name)
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path, ""
    return None, ("no Chromium found: run `make browser` (as root it installs Debian's chromium-headless-shell "
                  "with apt-get) or set GENSTUDIO_BROWSER to a Chromium/Chrome binary")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TASKS = [ep.name for ep in ordered_tabs(entry_points(group="genstudio.apps"))]


@pytest.fixture(scope="module")
def browser_path():
    path, why = find_browser()
    if path is None:
        pytest.skip(why)
    return path


@pytest.fixture(scope="module")
def app_url(browser_path):
    from apps.app import build_app
    demo = build_app()
    demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield demo.local_url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def page(browser_path, app_url):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        except Exception as e:  # a Chromium is there but does not start: a real failure, said plainly
            pytest.fail(f"Chromium at {browser_path} did not start under Playwright: {e}", pytrace=False)
        page = browser.new_page(viewport={"width": 1600, "height": 1200})  # wide: no tab overflows into a menu
        page.set_default_timeout(UI_TIMEOUT_MS)
        page.goto(app_url)
        page.get_by_role("tab").first.wait_for()
        try:
            yield page
        finally:
            browser.close()


# ---------------------------------------------------------------- helpers
def open_tab(page, task: str):
    """Select the task's tab and return its (only visible) panel."""
    page.get_by_role("tab", name=tab_label(task), exact=True).click()
    panel = page.locator('[role="tabpanel"]:visible')
    panel.first.wait_for()
    assert panel.count() == 1
    return panel


def block(page, panel, label: str):
    """The innermost component block whose label contains `label`."""
    return panel.locator(".block").filter(has=page.locator('[data-testid="block-label"]', has_text=label)).last


def close_toasts(page):
    """Close the toasts left from before (one may time out and go by itself meanwhile)."""
    for button in page.locator('[data-testid="toast-close"]').all():
        try:
            button.click(timeout=2_000)
        except Exception:
            pass
    page.locator('[data-testid="toast-body"]').first.wait_for(state="detached")


def error_toast(page) -> str:
    """The text of the error toast that appears next (it must be visible and say something)."""
    toast = page.locator('[data-testid="toast-body"].error').last
    toast.wait_for(state="visible", timeout=RUN_TIMEOUT_MS)
    text = toast.inner_text().strip()
    return text


def errors_shown(page) -> list[str]:
    return [t.inner_text() for t in page.locator('[data-testid="toast-body"].error').all() if t.is_visible()]


# ---------------------------------------------------------------- the page
def test_page_shows_every_tab_flagship_first(page):
    tabs = page.get_by_role("tab").all_inner_texts()
    assert [t.strip() for t in tabs] == [tab_label(task) for task in TASKS], tabs
    assert tabs[0].strip() == "Image → SVG" and set(TAB_LABELS.values()) <= {t.strip() for t in tabs}
    assert "genstudio" in page.title()
    assert "is unavailable" not in page.locator("body").inner_text()


def test_empty_submit_shows_an_error(page):
    panel = open_tab(page, "svg")
    close_toasts(page)
    panel.get_by_role("button", name="Convert to SVG").click()
    message = error_toast(page)
    assert "Upload an image or pick an example first." in message, message
    assert "Traceback" not in message
    close_toasts(page)


def test_corrupt_upload_shows_an_error(page, tmp_path):
    panel = open_tab(page, "svg")
    close_toasts(page)
    corrupt = tmp_path / "not-a-picture.png"
    corrupt.write_text("this is a text file, not a PNG\n")
    block(page, panel, "input image").locator('input[type="file"]').set_input_files(str(corrupt))
    panel.get_by_role("button", name="Convert to SVG").click()
    message = error_toast(page)
    assert "not-a-picture.png" in message and "not a readable image" in message, message
    assert "Traceback" not in message and "/tmp/" not in message and "gradio/" not in message, message
    close_toasts(page)
    clear = block(page, panel, "input image").get_by_role("button", name="Clear")
    if clear.count():
        clear.first.click()


def set_fast(page, panel, task: str):
    numbers, untick, _ = FAST.get(task, ({}, [], ""))
    for label, value in numbers.items():
        box = panel.get_by_label(f"number input for {label}", exact=True)
        box.fill(str(value))
        box.press("Enter")
        box.blur()
    for label in untick:
        panel.get_by_label(label, exact=True).uncheck()


@pytest.mark.parametrize("task", TASKS)
def test_tab_runs_its_first_example(page, task):
    panel = open_tab(page, task)
    close_toasts(page)
    examples = panel.locator(".gallery-item, tr.tr-body")  # one input: thumbnails; more inputs: a table
    assert examples.count() >= 2, f"{tab_label(task)}: no examples shown"
    images_before = panel.locator("img").count()
    examples.first.click()
    if examples.first.locator("img").count():  # an image example: wait until it shows in its input (slow under load)
        deadline = time.perf_counter() + 15
        while panel.locator("img").count() <= images_before and time.perf_counter() < deadline:
            page.wait_for_timeout(100)
    button = panel.locator("button.primary").first
    set_fast(page, panel, task)
    page.wait_for_timeout(300)  # the example's values reach the inputs
    started = time.perf_counter()
    button.click()
    label, element = RESULT[task]
    result = block(page, panel, label).locator(element).first
    download = block(page, panel, "download").locator("a").first
    deadline = started + RUN_TIMEOUT_MS / 1000
    while time.perf_counter() < deadline:  # the result, or an error toast: whichever comes first
        if errors_shown(page):
            pytest.fail(f"{tab_label(task)}: its first example ended in an error: {errors_shown(page)}")
        if result.count() and download.count():
            break
        page.wait_for_timeout(200)
    else:
        pytest.fail(f"{tab_label(task)}: no result after {RUN_TIMEOUT_MS / 1000:.0f} s")
    result.wait_for(state="visible")
    assert not errors_shown(page)
    summary = FAST.get(task, ({}, [], ""))[2]
    assert summary in panel.inner_text(), (task, summary, panel.inner_text()[-600:])
    print(f"{tab_label(task)}: result in {time.perf_counter() - started:.1f} s")
