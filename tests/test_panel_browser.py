"""The panel in a real browser: Debian's Chromium (headless), driven by Playwright, against a real station
(line service with the default bundle and LLM, its HTTP port, the panel) on loopback.

Screenshots at 1280x800 and 1920x1080 land in ``artifacts/panel/``. Where Chromium is missing the tests
skip, except on CI (``CI`` set), where ``.ci/run`` installs it and a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from panel_station import Station, running_station

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "panel"
# No sandbox (root in a container), no GPU, nothing in the background that would reach for the network.
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
                 "--disable-sync", "--no-first-run", "--mute-audio"]
TOUCH_TARGET_PX = 44  # WCAG 2.5.5 minimum; the panel aims for 56


@pytest.fixture(scope="module")
def station(llm_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Station]:
    with running_station(llm_bundle, tmp_path_factory.mktemp("archive")) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    assert CHROMIUM is not None, "CI must have Debian's chromium: .ci/run installs it"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def open_panel(browser: sync_api.Browser, station: Station, width: int, height: int) -> sync_api.Page:
    context = browser.new_context(viewport={"width": width, "height": height}, has_touch=True)
    offline: list[str] = []
    # the line has no internet: any request leaving the panel's origin is a defect
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(station.panel.url)
                  else (offline.append(route.request.url), route.abort()))
    page = context.new_page()
    page.offline_requests = offline  # type: ignore[attr-defined]
    page.goto(station.panel.url)
    sync_api.expect(page.locator("#status")).to_have_text("inspecting", timeout=15_000)
    return page


def record_answer_states(page: sync_api.Page) -> None:
    """Keep every text #answer-state is set to in window.answerStates (a MutationObserver sees each one)."""
    page.evaluate("""() => {
        window.answerStates = [];
        new MutationObserver((records) => {
            for (const record of records) {
                for (const node of record.addedNodes) window.answerStates.push(node.textContent);
            }
        }).observe(document.getElementById("answer-state"), { childList: true });
    }""")


def test_live_feed_gallery_and_why_at_1280x800(browser, station: Station, weave_parts: list[np.ndarray],
                                              ng_weave: np.ndarray) -> None:
    page = open_panel(browser, station, 1280, 800)
    expect = sync_api.expect

    station.push("cam2", "live-ok-1", weave_parts[6])
    station.push("cam2", "live-ok-2", weave_parts[7])
    expect(page.locator('#feed li[data-frame="live-ok-2"]')).to_be_visible(timeout=15_000)
    expect(page.locator('#feed li[data-frame="live-ok-1"]')).to_be_visible()
    expect(page.locator('#cameras [data-camera="cam2"] .counts')).to_contain_text("OK 2")

    station.push("cam2", "live-ng-1", ng_weave)
    tile = page.locator('#gallery .tile[data-frame="live-ng-1"]')
    expect(tile).to_be_visible(timeout=15_000)
    expect(page.locator('#feed li[data-frame="live-ng-1"] .cls')).to_have_text("NG")
    image = tile.locator("img")
    expect(image).to_have_js_property("complete", True)
    assert image.evaluate("img => img.naturalWidth") == 448  # the runtime's OpenCV overlay, not a broken image
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / "panel-1280x800.png")

    tile.tap()
    expect(page.locator("#detail")).to_be_visible()
    expect(page.locator("#detail-title")).to_have_text("cam2 · live-ng-1")
    for button in page.locator("#detail .btn:visible").all():  # large enough to hit with a gloved finger
        box = button.bounding_box()
        assert box is not None and box["height"] >= TOUCH_TARGET_PX, button.inner_text()
    record_answer_states(page)
    page.get_by_role("button", name="Why?").tap()
    expect(page.locator("#answer-state")).to_contain_text("Done in", timeout=120_000)
    # the answer streamed: every state the panel showed, in order (a poll for "Answering…" can miss it when the
    # last chunk and the final reply arrive in one network read and the state is replaced within one task)
    states = page.evaluate("window.answerStates")
    assert states[0] == "Thinking…" and "Answering…" in states and states[-1].startswith("Done in"), states
    assert len(page.locator("#answer").inner_text().strip()) > 10
    page.screenshot(path=SHOTS / "panel-why-1280x800.png")

    # cancel: stopped while the model is still on it (answers are kept short, so cancel before the first
    # sentence: a sentence-at-a-time answer can be done before a test sees "Answering…"); the next works
    page.fill("#ask-text", "Describe every part of this image in great detail, step by step.")
    page.get_by_role("button", name="Ask").tap()
    expect(page.locator("#answer-state")).to_have_text("Thinking…")
    page.get_by_role("button", name="Cancel").tap()
    expect(page.locator("#answer-state")).to_have_text("Cancelled.")
    expect(page.locator("#cancel")).to_be_hidden()
    page.get_by_role("button", name="Where?").tap()
    expect(page.locator("#answer-state")).to_contain_text("Done in", timeout=120_000)
    # the conversation stays visible while the part is open (the follow-up went with its history)
    expect(page.locator("#answer .turn")).to_have_count(3)
    expect(page.locator("#answer .turn .q").last).to_have_text("Where exactly is the defect?")
    assert page.offline_requests == []  # type: ignore[attr-defined]
    page.context.close()


def test_layout_at_1920x1080(browser, station: Station, ng_weave: np.ndarray) -> None:
    assert station.inspect("cam3", "big-ng-1", ng_weave).verdict == "NG"
    page = open_panel(browser, station, 1920, 1080)
    sync_api.expect(page.locator('#gallery .tile[data-frame="big-ng-1"]')).to_be_visible(timeout=15_000)
    # nothing spills over the screen: the page itself never scrolls, its lists do
    width, height = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    assert (width, height) == (1920, 1080)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / "panel-1920x1080.png")
    page.locator('#gallery .tile[data-frame="big-ng-1"]').tap()
    sync_api.expect(page.locator("#detail")).to_be_visible()
    # the part view shows each region's measured evidence (Verdict.regions[].evidence)
    sync_api.expect(page.locator("#detail-facts")).to_contain_text("Region 1")
    sync_api.expect(page.locator("#detail-facts")).to_contain_text("normals")
    page.screenshot(path=SHOTS / "panel-detail-1920x1080.png")
    page.context.close()
