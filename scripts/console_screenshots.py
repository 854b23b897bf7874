"""Screenshots of what each party sees in its console after ``fedacq demo --campaign`` (the README's pictures).

    fedacq demo --campaign --out /tmp/campaign_demo
    python scripts/console_screenshots.py --demo-out /tmp/campaign_demo --out docs/console

For each party of the demo's output (``<demo-out>/lender`` and ``<demo-out>/platform``, each with
its ``party.toml`` and node state) this starts ``fedacq console --config party.toml`` as a
subprocess on a free loopback port (``--listen 127.0.0.1:0``; the port is read from the line the
console prints), waits until it answers, and drives the system Chromium (``/usr/bin/chromium``
through Playwright's ``executable_path``; a browser is never downloaded) through the pages a
person looks at, as the person would: by following the console's own links. On each page it
waits for the tables and SVG plots that must be there and fails naming the page and the element
when one is missing, when the browser reports an error, or when the page shows a path of this
machine (the pictures go into the README). Each page is saved as a full-page PNG, reduced to a
256-colour palette so the repository stays small. The consoles are stopped at the end, also on
error.
"""

from __future__ import annotations

import argparse
import io
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 900}
START_DEADLINE_S = 60.0
PAGE_DEADLINE_MS = 20_000
PALETTE_COLOURS = 256


class PageError(RuntimeError):
    """A console page lacks what it must show (or shows what it must not)."""


def start_console(stack: ExitStack, party_dir: Path) -> str:
    """Start ``fedacq console`` for the party in ``party_dir``; its URL once it answers.

    The process is registered on ``stack`` so it is terminated whatever happens next."""
    config = party_dir / "party.toml"
    if not config.is_file():
        raise FileNotFoundError(f"{config}: no party.toml (is this the output of `fedacq demo --campaign --out`?)")
    exe = shutil.which("fedacq")
    command = [exe] if exe else [sys.executable, "-c", "import sys; from fedacq.cli import main; sys.exit(main())"]
    proc = subprocess.Popen([*command, "console", "--config", str(config), "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stack.callback(_stop, proc)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)
    threading.Thread(target=pump, daemon=True).start()

    deadline = time.monotonic() + START_DEADLINE_S
    url = None
    while url is None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the console of {party_dir.name} printed no address within {START_DEADLINE_S:.0f} s")
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            continue
        if line is None:
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"the console of {party_dir.name} exited ({proc.wait()}) before serving:\n{err}")
        found = re.search(r"(https?://127\.0\.0\.1:\d+)/?", line)
        url = found.group(1) if found else None
    while True:  # it printed its address after binding; poll until a page comes back
        try:
            with urllib.request.urlopen(url + "/", timeout=5) as response:
                if response.status == 200:
                    return url
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the console of {party_dir.name} at {url} did not answer within "
                               f"{START_DEADLINE_S:.0f} s")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def save_png(png: bytes, path: Path) -> int:
    """Write the screenshot as a 256-colour palette PNG (UI text and flat colours survive it); its size."""
    try:
        from PIL import Image
    except ImportError:  # without Pillow the screenshot is kept as the browser made it
        path.write_bytes(png)
        return len(png)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.quantize(colors=PALETTE_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) \
        .save(path, format="PNG", optimize=True)
    return path.stat().st_size


class Shooter:
    """One browser page that checks console pages and saves them as ``<party>-<name>.png``."""

    def __init__(self, page: Any, out: Path, private: list[str]) -> None:
        self.page = page
        self.out = out
        self.private = private
        self.saved: list[Path] = []
        self.problems: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.problems.append(m.text))
        page.on("pageerror", lambda e: self.problems.append(str(e)))

    def require(self, where: str, selector: str, state: str = "visible") -> None:
        try:
            self.page.wait_for_selector(selector, state=state, timeout=PAGE_DEADLINE_MS)
        except Exception as exc:  # Playwright's TimeoutError: say which page lacks what
            raise PageError(f"{where}: no visible {selector!r} on {self.page.url}") from exc

    def shot(self, party: str, name: str, title: str, selectors: list[str], plots: int = 0) -> None:
        where = f"{party} {name}"
        self.require(where, f"main h2:text-is('{title}')")
        for selector in selectors:
            self.require(where, selector)
        if plots:
            marks = self.page.eval_on_selector_all(
                "svg.plot", "els => els.map(e => e.querySelectorAll('polyline, rect.bar, circle').length)")
            if len(marks) < plots or not all(marks):
                raise PageError(f"{where}: expected {plots} SVG plot(s) with drawn marks, found marks {marks}")
        text = self.page.inner_text("body")
        shown = [p for p in self.private if p in text]
        if shown:
            raise PageError(f"{where}: the page shows a path of this machine ({shown[0]!r}); not for the README")
        if self.problems:
            raise PageError(f"{where}: the browser reported {self.problems}")
        path = self.out / f"{party}-{name}.png"
        size = save_png(self.page.screenshot(full_page=True), path)
        self.saved.append(path)
        print(f"{path} ({size / 1024:.0f} KB)", flush=True)

    def outcomes(self, where: str) -> None:
        """Say which cycle outcomes the campaign picture lacks (the demo should show all three)."""
        for outcome in ("refused", "rolled_back"):
            if not self.page.locator(f"table.cycles tr.outcome-{outcome}").count():
                print(f"warning: {where}: no {outcome.replace('_', ' ')} cycle; the picture shows none",
                      file=sys.stderr, flush=True)

    def nav(self, text: str) -> None:
        self.page.click(f"nav a:text-is('{text}')")

    def follow(self, where: str, selector: str) -> None:
        self.require(where, selector)
        self.page.click(selector)


def lender_pages(s: Shooter, url: str) -> None:
    s.page.goto(url + "/")
    s.shot("lender", "overview", "Overview", ["table.overview", "table.campaigns"])
    s.follow("lender overview", "table.campaigns a")
    title = s.page.inner_text("main h2")
    s.shot("lender", "campaign", title, ["table.cycles", "tr.outcome-published"], plots=1)
    s.outcomes("lender campaign")
    # the newest published version: its ROC, KS and gains at the lender (which holds the labels)
    s.follow("lender campaign", "table.cycles tr.outcome-published >> nth=-1 >> a")
    s.shot("lender", "model", s.page.inner_text("main h2"),
           ["svg.plot text:text-is('ROC (at decile cuts)')", "svg.plot text:text-is('Gains')"], plots=3)
    s.nav("Lift")
    s.require("lender lift", "svg.plot line.interval", "attached")  # an interval line has no width to be "visible"
    s.shot("lender", "lift", "Lift over time", ["table.lift"], plots=1)
    s.nav("Egress ledger")
    s.shot("lender", "egress", "Egress ledger", ["table.ledger-sent", "table.ledger-received"], plots=1)


def platform_pages(s: Shooter, url: str) -> None:
    s.page.goto(url + "/")
    s.shot("platform", "overview", "Overview", ["table.overview", "table.campaigns"])
    s.follow("platform overview", "table.campaigns a")
    title = s.page.inner_text("main h2")
    s.shot("platform", "campaign", title, ["table.cycles", "tr.outcome-published"])
    s.outcomes("platform campaign")
    s.nav("Boost tables")
    s.shot("platform", "boosts", "Boost tables", ["table.boosts tr.live"])
    # the two newest boost table versions: how far the new version moves the platform's bids
    s.nav("Score drift")
    s.require("platform drift", "select[name=a]")
    tables = s.page.eval_on_selector("select[name=a]", "e => [...e.options].map(o => o.value)")
    tables = [t for t in tables if t.startswith("table:")]
    if len(tables) < 2:
        raise PageError(f"platform drift: fewer than two boost table versions to compare ({tables})")
    s.page.select_option("select[name=a]", tables[-2])
    s.page.select_option("select[name=b]", tables[-1])
    s.page.click("form button")
    s.page.wait_for_url("**/drift?a=*")
    s.shot("platform", "drift", "Score drift", ["table.psi"], plots=1)
    s.nav("Egress ledger")
    s.shot("platform", "egress", "Egress ledger", ["table.ledger-sent", "table.ledger-received"], plots=1)


PAGES: dict[str, Callable[[Shooter, str], None]] = {"lender": lender_pages, "platform": platform_pages}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo-out", required=True, type=Path, help="the folder `fedacq demo --campaign --out` made")
    parser.add_argument("--out", required=True, type=Path, help="where the PNGs go, e.g. docs/console")
    parser.add_argument("--chromium", default=CHROMIUM, help=f"the browser to drive (default: {CHROMIUM})")
    args = parser.parse_args(argv)
    if not Path(args.chromium).exists():
        parser.error(f"no Chromium at {args.chromium} (this script never downloads a browser)")
    from playwright.sync_api import sync_playwright

    demo = args.demo_out.resolve()
    private = sorted({str(demo), str(Path.home()), str(Path.cwd().resolve())} - {"/"}, key=len, reverse=True)
    with ExitStack() as stack:
        urls = {party: start_console(stack, demo / party) for party in PAGES}
        args.out.mkdir(parents=True, exist_ok=True)
        p = stack.enter_context(sync_playwright())
        browser = p.chromium.launch(executable_path=args.chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        stack.callback(browser.close)
        context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
        context.set_default_timeout(PAGE_DEADLINE_MS)
        for party, pages in PAGES.items():
            shooter = Shooter(context.new_page(), args.out, private)
            pages(shooter, urls[party])
            shooter.page.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
