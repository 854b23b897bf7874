"""Click through every page of the console in headless Chromium (the system's, never a download).

Playwright's Python package drives ``/usr/bin/chromium`` through ``executable_path``. The
console serves a node state built by :func:`test_console_data.build_state` on 127.0.0.1.
The test starts at the overview and follows the navigation links, the links into a job,
a model version and a campaign, and the drift form, as a person would; on each page it
waits for the elements that must be there (title, tables, SVG plots), checks that the
browser reported no error (a Content-Security-Policy violation would be one), takes a
screenshot and checks it is not blank. On the jobs page it changes the running job's
progress on disk and waits for the page's poll to show it. Waits are on selectors and
conditions with deadlines, never sleeps. With ``FEDACQ_CONSOLE_SCREENSHOTS=DIR`` the
screenshots are kept in DIR (for the README).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

from fedacq.console.data import NodeState
from fedacq.console.server import ConsoleServer
from fedacq.console.settings import ConsoleSettings
from test_console_data import build_state

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"no system Chromium at {CHROMIUM} (the console's browser test never downloads one)",
                allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed "
                                     "(pip install playwright; the system Chromium is used, no `playwright install`)")
Image = pytest.importorskip("PIL.Image", reason="Pillow is needed to check the screenshots").open

DEADLINE_MS = 15_000


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ConsoleServer, Path]]:
    root = tmp_path_factory.mktemp("browser")
    src = build_state(root)
    server = ConsoleServer(NodeState(src), ConsoleSettings(listen="127.0.0.1:0")).start()
    try:
        yield server, src.state_dir
    finally:
        server.stop()


@pytest.fixture(scope="module")
def page(console: tuple[ConsoleServer, Path]) -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(DEADLINE_MS)
        pg = context.new_page()
        pg.problems = []  # type: ignore[attr-defined]
        pg.on("console", lambda m: m.type == "error" and pg.problems.append(m.text))
        pg.on("pageerror", lambda e: pg.problems.append(str(e)))
        try:
            yield pg
        finally:
            browser.close()


def check(page: Any, tmp_path: Path, name: str, title: str, selectors: list[str], plots: int = 0) -> None:
    """The page titled ``title`` is shown with ``selectors`` visible, at least ``plots`` SVG plots with
    drawn marks, no browser error, and a screenshot that is not blank."""
    page.wait_for_selector(f"main h2:text-is('{title}')")
    for sel in selectors:
        page.wait_for_selector(sel, state="visible")
    if plots:
        assert page.locator("svg.plot").count() >= plots, name
        marks = page.eval_on_selector_all("svg.plot", "els => els.map(e => e.querySelectorAll("
                                          "'polyline, rect.bar, circle').length)")
        assert all(m > 0 for m in marks), (name, marks)
        box = page.locator("svg.plot").first.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 200
    assert page.problems == [], (name, page.problems)
    png = page.screenshot(full_page=True)
    out = tmp_path / f"{name}.png"
    out.write_bytes(png)
    keep = os.environ.get("FEDACQ_CONSOLE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(out, Path(keep) / out.name)
    image = Image(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 8, f"{name}: the screenshot is blank"
    if plots:  # the first plot, cut out of the screenshot, has its lines in colour
        shot = Image(io.BytesIO(page.locator("svg.plot").first.screenshot())).convert("RGB")
        assert len(shot.getcolors(maxcolors=1 << 16) or range(99)) > 4, f"{name}: the plot is empty"


def nav(page: Any, text: str) -> None:
    page.click(f"nav a:text-is('{text}')")


def test_click_through_every_page(page: Any, console: tuple[ConsoleServer, Path], tmp_path: Path) -> None:
    server, state_dir = console
    page.goto(server.url)
    check(page, tmp_path, "overview", "Overview", ["table.overview", "table.jobs", "table.campaigns"])
    assert "lender" in page.inner_text("header")

    nav(page, "Campaigns")
    check(page, tmp_path, "campaigns", "Campaigns", ["table.campaigns"])
    page.click("table.campaigns a:text-is('autumn')")
    check(page, tmp_path, "campaign", "Campaign autumn",
          ["table.cycles", "tr.outcome-refused", "tr.outcome-rolled_back"], plots=1)
    reasons = page.inner_text("tr.outcome-refused")
    assert "<script>alert('x')</script>" in reasons  # shown as text, not run
    assert page.locator("tr.unreadable").count() == 1

    page.click("a:text('Score drift between the last two scored cycles')")
    check(page, tmp_path, "drift-cycles", "Score drift", ["table.psi", "form"], plots=1)

    nav(page, "Jobs")
    check(page, tmp_path, "jobs", "Jobs", ["table.jobs", "tr[data-job-id='run-live'] progress"])
    # live progress: the node moves the running job on; the page's poll shows it
    record_path = state_dir / "jobs" / "run-live" / "job.json"
    record = json.loads(record_path.read_text())
    record["progress"].update(done=8, eta_seconds=2.0)
    record_path.write_text(json.dumps(record))
    row = page.locator("tr[data-job-id='run-live']")
    playwright_api.expect(row.locator("[data-field=eta]")).to_have_text("2 s", timeout=DEADLINE_MS)
    playwright_api.expect(row.locator("progress")).to_have_js_property("value", 0.8)

    page.click("table.jobs a:text-is('run-v2')")
    check(page, tmp_path, "job-binary", "Job run-v2", ["svg.plot text:text-is('ROC (at decile cuts)')"], plots=5)
    assert page.locator("svg.plot").count() == 5  # logloss and auc curves; ROC, KS, gains

    nav(page, "Models")
    check(page, tmp_path, "models", "Model versions", ["table.models"], plots=1)
    page.click("table.models a:text-is('run-value')")
    check(page, tmp_path, "job-regression", "Job run-value", [], plots=3)

    nav(page, "Score drift")
    check(page, tmp_path, "drift", "Score drift", ["table.psi"], plots=1)
    page.select_option("select[name=a]", "table:camp/camp-v1")
    page.select_option("select[name=b]", "table:camp/camp-v2")
    page.click("form button")
    page.wait_for_url("**/drift?a=*")
    check(page, tmp_path, "drift-tables", "Score drift", ["table.psi"], plots=1)
    assert "camp-v2" in page.inner_text("table.psi")

    nav(page, "Boost tables")
    check(page, tmp_path, "boosts", "Boost tables", ["table.boosts tr.live"])
    assert "camp-v1" in page.inner_text("table.boosts tr.live")

    nav(page, "Lift")
    check(page, tmp_path, "lift", "Lift over time", ["table.lift"], plots=2)
    assert page.locator("svg.plot line.interval").count() == 7  # an interval per measurement (3 jobs, 4 campaign)

    nav(page, "Egress ledger")
    check(page, tmp_path, "egress", "Egress ledger", ["table.ledger-sent", "table.ledger-received"], plots=1)

    nav(page, "Overview")
    check(page, tmp_path, "overview-again", "Overview", ["table.overview"])
