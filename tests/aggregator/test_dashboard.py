"""The coordinator dashboard: its files as served, and the page in a real headless Chromium.

The browser test starts the real app (create_app over a ReleaseFeed) under uvicorn on a free
port and drives Chromium through chromedriver (selenium). The Chromium command line alone
cannot test this page: the dashboard keeps its /api/stream EventSource open, so
`--virtual-time-budget` never runs out and `--dump-dom` without it dumps the page before its
fetch has finished. The WebDriver also lets the test publish a second release while the
page is open and wait for it to be drawn, and read every request the page made from
Chromium's performance log.

A screenshot of the page is written to test-artifacts/dashboard.png at the repository root.
"""

from __future__ import annotations

import asyncio
import contextlib
import html.parser
import itertools
import json
import os
import re
import shutil
import struct
import threading
import time
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from aggregator.dashboard_release import K, make_release
from handsoff.federation.statements import (
    COUNTRY,
    PARTNER,
    SUPPRESSED,
    AggregateStatement,
    Figure,
    PublishedTable,
)
from handsoff.services.aggregator.feed import LatestRelease, ReleaseFeed
from handsoff.services.aggregator.http import DASHBOARD, create_app
from handsoff.services.aggregator.indicators import REGION
from handsoff.services.natsserver import free_port

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium not installed: apt-get install chromium chromium-driver",
)
LOCAL_HOSTS = {"127.0.0.1"}
LEGEND = "or hidden so another small figure cannot be worked out"


# ---------------------------------------------------------------- the server


class Server:
    """The aggregator's HTTP app under uvicorn, in a thread with its own event loop."""

    def __init__(self, feed: ReleaseFeed) -> None:
        self.feed = feed
        self.port = free_port()
        config = uvicorn.Config(
            create_app(feed),
            host="127.0.0.1",
            port=self.port,
            lifespan="off",
            log_config=None,  # leave the test process's logging alone
            log_level=None,
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, name="dashboard-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.server.serve()

    def start(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn stopped before it served"
            assert time.monotonic() < deadline, "uvicorn did not start in 15 s"
            time.sleep(0.02)
        return self

    def publish(self, release: LatestRelease) -> None:
        """Set the feed's latest release on the server's loop (wakes /api/stream)."""
        assert self.loop is not None
        done = asyncio.run_coroutine_threadsafe(
            self.feed.publish(release.number, release.statements, release.signed), self.loop
        )
        done.result(timeout=10)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "uvicorn did not stop in 15 s"

    def get(self, path: str) -> tuple[int, str, bytes]:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()


@pytest.fixture(scope="module")
def releases() -> tuple[LatestRelease, LatestRelease]:
    """Release 1 (700 cases) and release 2 (800: the same and 100 more)."""
    first, memory = make_release(1, 700)
    second, _ = make_release(2, 800, memory)
    return first, second


@pytest.fixture(scope="module")
def partner_release() -> LatestRelease:
    """Release 1 of a region whose document allows partner breakdowns."""
    return make_release(1, 700, breakdowns="partner")[0]


@pytest.fixture
def empty_server() -> Iterator[Server]:
    """The app before the aggregator's first release."""
    s = Server(ReleaseFeed()).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def server(empty_server: Server, releases: tuple[LatestRelease, LatestRelease]) -> Server:
    """The app with release 1 published."""
    empty_server.publish(releases[0])
    return empty_server


# ---------------------------------------------------------------- what the page should show


def periods_of(statements: Sequence[AggregateStatement]) -> list[str]:
    found = {t.period for s in statements for t in s.tables}
    found |= {x.period for s in statements for x in (*s.stats, *s.shares)}
    return sorted(found)


def by_indicator(release: LatestRelease) -> dict[str, AggregateStatement]:
    return {s.indicator: s for s in release.statements}


def table_of(
    release: LatestRelease, indicator: str, period: str, dimension: str = COUNTRY
) -> PublishedTable:
    return next(
        t
        for t in by_indicator(release)[indicator].tables
        if t.period == period and t.dimension == dimension
    )


def total(s: AggregateStatement, period: str, area: str = REGION) -> Figure:
    """A count indicator's total (no table, or no row: nothing counted, 0)."""
    t = next((t for t in s.tables if t.period == period and t.dimension == COUNTRY), None)
    if t is None:
        return 0
    if area == REGION:
        return t.total
    return t.row_totals[t.rows.index(area)] if area in t.rows else 0


COUNT_HEADLINES = {
    "incidents": "incidents",
    "referrals-made": "referrals-made-by-service",
    "referrals-completed": "referrals-completed-by-service",
    "police-reports": "police-reports-filed",
    "court-opened": "court-cases-opened",
    "court-won": "court-cases-won",
}


def expected_headlines(release: LatestRelease) -> dict[str, dict[str, str | None]]:
    """data-headline -> the data-value (and data-partial) of its latest and all-months figure."""
    st = by_indicator(release)
    periods = periods_of(release.statements)
    latest = periods[-1]
    out: dict[str, dict[str, str | None]] = {}
    for key, indicator in COUNT_HEADLINES.items():
        monthly = [total(st[indicator], p) for p in periods]
        numbers = [v for v in monthly if isinstance(v, int)]
        out[key] = {
            "latest": str(total(st[indicator], latest)),
            "all": str(sum(numbers)),
            "partial": str(len(monthly) - len(numbers)) if len(numbers) < len(monthly) else None,
        }
    region_shares = [x for x in st["police-share"].shares if x.area == REGION and not x.partner]
    share = next(x for x in region_shares if x.period == latest)
    whole = [x for x in region_shares if isinstance(x.police, int) and isinstance(x.incidents, int)]
    police = sum(x.police for x in whole if isinstance(x.police, int))
    incidents = sum(x.incidents for x in whole if isinstance(x.incidents, int))
    left = len(region_shares) - len(whole)
    out["police-share"] = {
        "latest": SUPPRESSED if share.share is None else repr(share.share),
        "all": f"{police}/{incidents}",
        "partial": str(left) if left else None,
    }
    stats = [x for x in st["time-to-first-response"].stats if x.area == REGION and not x.partner]
    now = next(x for x in stats if x.period == latest)
    for key, field in (("response-median", "median"), ("response-p90", "p90")):
        value = getattr(now, field)
        values = [getattr(x, field) for x in stats if getattr(x, field) is not None]
        out[key] = {
            "latest": f"{value:g}" if value is not None else SUPPRESSED,
            "all": f"{min(values):g}-{max(values):g}",
            "partial": None,
        }
    return out


def suppressed_shown(release: LatestRelease, period: str) -> int:
    """How many "suppressed" figures the page's tables for `period` show: every figure of a
    broken-down table (cells and margins), the totals of a one-column table (its cells and
    column total repeat them), n of the time statistic, both counts of the police share.
    Country and region figures only: partner_suppressed_shown counts the partner tables'."""
    n = 0
    for s in release.statements:
        for t in s.tables:
            if t.period != period or t.dimension != COUNTRY:
                continue
            if len(t.columns) == 1:
                figures: list[Figure] = [*t.row_totals, t.total]
            else:
                cells = itertools.chain.from_iterable(t.cells)
                figures = [*cells, *t.row_totals, *t.column_totals, t.total]
            n += figures.count(SUPPRESSED)
        n += sum(x.n == SUPPRESSED for x in s.stats if x.period == period and not x.partner)
        n += sum(
            (x.police == SUPPRESSED) + (x.incidents == SUPPRESSED)
            for x in s.shares
            if x.period == period and not x.partner
        )
    return n


def partner_suppressed_shown(release: LatestRelease, period: str) -> int:
    """How many "suppressed" figures the partner tables for `period` show: each partner's
    cells and total (its total alone in a one-column table), n, both counts of the share."""
    n = 0
    for s in release.statements:
        for t in s.tables:
            if t.period != period or t.dimension != PARTNER:
                continue
            figures = list(t.row_totals)
            if len(t.columns) > 1:
                figures += itertools.chain.from_iterable(t.cells)
            n += figures.count(SUPPRESSED)
        n += sum(x.n == SUPPRESSED for x in s.stats if x.period == period and x.partner)
        n += sum(
            (x.police == SUPPRESSED) + (x.incidents == SUPPRESSED)
            for x in s.shares
            if x.period == period and x.partner
        )
    return n


def incident_trend(release: LatestRelease) -> tuple[int, int, int]:
    """(published points, suppressed points, all points) of incidents per area and month."""
    st = by_indicator(release)["incidents"]
    periods = periods_of(release.statements)
    areas = [*sorted({r for t in st.tables if t.dimension == COUNTRY for r in t.rows}), REGION]
    values = [total(st, p, a) for a in areas for p in periods]
    published = sum(isinstance(v, int) for v in values)
    return published, values.count(SUPPRESSED), len(values)


# ---------------------------------------------------------------- files, without a browser


class _Refs(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_title = tag == "title"
        for name, value in attrs:
            if name in ("src", "href", "action", "poster", "data") and value is not None:
                self.refs.append((tag, name, value))

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False


def test_dashboard_files_are_in_the_package() -> None:
    assert DASHBOARD.is_dir()
    names = {p.name for p in DASHBOARD.iterdir()}
    assert {"index.html", "dashboard.js", "dashboard.css"} <= names


def test_index_references_only_local_files() -> None:
    parser = _Refs()
    parser.feed((DASHBOARD / "index.html").read_text(encoding="utf-8"))
    assert parser.title.strip() == "Regional indicators · handsoff"
    assets = set()
    for tag, name, value in parser.refs:
        assert not urlsplit(value).netloc, f"<{tag} {name}={value!r}> names another host"
        assert value.startswith(("/assets/", "/api/", "#", "data:")), f"<{tag} {name}={value!r}>"
        if value.startswith("/assets/"):
            assets.add(value.removeprefix("/assets/"))
    assert assets == {"dashboard.css", "dashboard.js"}
    for asset in assets:
        assert (DASHBOARD / asset).is_file()


def test_scripts_and_styles_load_nothing_from_elsewhere() -> None:
    js = (DASHBOARD / "dashboard.js").read_text(encoding="utf-8")
    css = (DASHBOARD / "dashboard.css").read_text(encoding="utf-8")
    # The only absolute URL in the script is the SVG namespace (a name, never fetched).
    assert set(re.findall(r"https?://[^\s\"'`)]+", js)) == {"http://www.w3.org/2000/svg"}
    assert re.findall(r"fetch\(([A-Z_]+)", js) == ["LATEST_URL"]
    assert 'LATEST_URL = "/api/releases/latest"' in js
    assert 'STREAM_URL = "/api/stream"' in js
    assert "innerHTML" not in js  # figures go in as text, never as markup
    assert "@import" not in css
    assert "url(" not in css
    assert "http" not in css


def test_the_app_serves_the_dashboard(server: Server) -> None:
    status, ctype, body = server.get("/")
    assert status == 200
    assert ctype.startswith("text/html")
    assert body == (DASHBOARD / "index.html").read_bytes()
    for name, kind in (("dashboard.js", "javascript"), ("dashboard.css", "text/css")):
        status, ctype, body = server.get(f"/assets/{name}")
        assert status == 200
        assert kind in ctype
        assert body == (DASHBOARD / name).read_bytes()
    status, ctype, _ = server.get("/api/releases/latest.csv")
    assert status == 200
    assert ctype.startswith("text/csv")


# ---------------------------------------------------------------- the page in Chromium


@contextlib.contextmanager
def chromium() -> Iterator[WebDriver]:
    assert CHROMIUM is not None
    assert CHROMEDRIVER is not None
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--window-size=1280,900",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        "--lang=en-GB",
        # Belt and braces: any host but this one fails to resolve (the test also checks
        # that the page never tried).
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(arg)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium's sandbox refuses to run as root
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    # An explicit chromedriver: selenium's driver manager (which downloads) never runs.
    service = Service(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, what: str, check: Any, timeout: float = 30) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        check, message=f"waiting for {what}"
    )


def app_state(driver: WebDriver) -> tuple[str | None, str | None]:
    app = driver.find_element(By.ID, "app")
    return app.get_attribute("data-state"), app.get_attribute("data-release")


def requested_urls(log: list[dict[str, Any]]) -> list[str]:
    urls = []
    for entry in log:
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def is_local(url: str) -> bool:
    """A request to this machine, or none at all (a data: URL)."""
    parts = urlsplit(url)
    return parts.scheme == "data" or parts.hostname in LOCAL_HOSTS


def headline(driver: WebDriver, key: str) -> dict[str, str | None]:
    card = driver.find_element(By.CSS_SELECTOR, f'[data-headline="{key}"]')
    latest = card.find_element(By.CSS_SELECTOR, '[data-period="latest"]')
    whole = card.find_element(By.CSS_SELECTOR, '[data-period="all"]')
    return {
        "latest": latest.get_attribute("data-value"),
        "all": whole.get_attribute("data-value"),
        "partial": whole.get_attribute("data-partial"),
    }


def chart(driver: WebDriver, name: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'[data-chart="{name}"]')


def points(element: WebElement) -> tuple[int, int]:
    return int(element.get_attribute("data-points") or -1), int(
        element.get_attribute("data-gaps") or -1
    )


def png_facts(data: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values of the decompressed image data) of a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, width, height, idat = 8, 0, 0, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


def full_page_png(driver: WebDriver) -> bytes:
    import base64

    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics["cssContentSize"]
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        },
    )
    return base64.b64decode(shot["data"])


@needs_chromium
def test_dashboard_in_headless_chromium(
    server: Server, releases: tuple[LatestRelease, LatestRelease]
) -> None:
    first, second = releases
    periods = periods_of(first.statements)
    latest, earliest = periods[-1], periods[0]
    log: list[dict[str, Any]] = []
    with chromium() as driver:
        driver.get(server.url + "/")
        wait_for(driver, "release 1 drawn", lambda d: app_state(d) == ("ready", "1"))
        wait_for(
            driver,
            "the live stream",
            lambda d: (
                d.find_element(By.ID, "connection").get_attribute("data-connection") == "open"
            ),
        )

        # The page: title, headings, release details.
        assert driver.title == "Regional indicators · handsoff"
        assert driver.find_element(By.TAG_NAME, "h1").text == "Regional indicators: SADC"
        h2 = [e.text for e in driver.find_elements(By.TAG_NAME, "h2")]
        assert h2[:3] == ["Headline figures for the region", "Monthly trends", "Breakdowns"]
        header = first.statements[0]

        def field(name: str) -> str:
            return driver.find_element(By.CSS_SELECTOR, f'[data-field="{name}"]').text

        assert field("release") == "1"
        assert field("k") == str(K)
        assert field("as-of") == "2026-09-30 17:45:12 UTC"
        assert field("stream") == header.inputs.stream
        assert field("seq") == f"1 to {header.inputs.last_seq:,}"
        assert field("accepted") == f"{header.inputs.accepted:,}"
        assert field("commitment") == header.inputs.commitment
        links = {
            e.get_attribute("id"): e.get_attribute("href")
            for e in driver.find_elements(By.CSS_SELECTOR, "#about a")
        }
        assert links == {
            "download-csv": server.url + "/api/releases/latest.csv",
            "download-json": server.url + "/api/releases/latest",
        }

        # Headline figures are the release's figures.
        for key, expected in expected_headlines(first).items():
            assert headline(driver, key) == expected, key

        # Trend charts carry data; suppressed values are gaps with a marker, never zeros.
        published, suppressed, everything = incident_trend(first)
        assert points(chart(driver, "incidents-trend")) == (published, suppressed)
        assert published > 0
        assert suppressed > 0
        assert published + suppressed == everything
        gap_marks = chart(driver, "incidents-trend").find_elements(By.CSS_SELECTOR, "[data-gap]")
        assert len(gap_marks) == suppressed
        for name in ("police-share-trend", "response-time-trend"):
            assert points(chart(driver, name))[0] > 0, name
        for svg in driver.find_elements(By.CSS_SELECTOR, "figure.chart > svg"):
            assert svg.get_attribute("role") == "img"
            assert svg.get_attribute("aria-label")
        bars = chart(driver, "incidents-by-violence-type")
        vt = table_of(first, "incidents-by-violence-type", latest)
        assert sum(points(bars)) == len(vt.columns)
        assert points(bars)[1] == list(vt.column_totals).count(SUPPRESSED)

        # Tables: every suppressed figure is a visibly marked cell, and only those.
        cells = driver.find_elements(By.CSS_SELECTOR, "[data-suppressed]")
        assert len(cells) == suppressed_shown(first, latest) > 0
        for cell in cells[:20]:
            assert cell.tag_name == "td"
            assert cell.text == "suppressed"
            assert "repeating-linear-gradient" in cell.value_of_css_property("background-image")
        tables = driver.find_elements(By.CSS_SELECTOR, "#indicator-tables table")
        assert len(tables) == len(first.statements)
        # The region allows no partner breakdowns: no partner table, no partner named.
        assert driver.find_elements(By.CSS_SELECTOR, '[data-dimension="partner"]') == []
        assert "-hands-off" not in driver.find_element(By.ID, "app").text
        assert all(t.find_element(By.TAG_NAME, "caption").text for t in tables)
        legend = driver.find_element(By.ID, "legend-tables").text
        assert f"fewer than {K} cases, {LEGEND}" in legend

        # The screenshot, a test artifact: a large, far from blank PNG.
        ARTIFACTS.mkdir(exist_ok=True)
        png = full_page_png(driver)
        shot = ARTIFACTS / "dashboard.png"
        shot.write_bytes(png)
        width, height, distinct = png_facts(png)
        assert width >= 1200
        assert height >= 2000
        assert len(png) > 100_000
        assert distinct > 100

        # Another month and a country: the breakdowns and tables follow.
        Select(driver.find_element(By.ID, "period-select")).select_by_value(earliest)
        Select(driver.find_element(By.ID, "area-select")).select_by_value("ZA")
        wait_for(
            driver,
            "the earliest month's tables",
            lambda d: d.find_element(By.ID, "tables-title").text == "Tables for Jan 2026",
        )
        cells = driver.find_elements(By.CSS_SELECTOR, "[data-suppressed]")
        assert len(cells) == suppressed_shown(first, earliest) > 0
        bars = chart(driver, "incidents-by-perpetrator")
        assert "South Africa, Jan 2026" in bars.find_element(By.TAG_NAME, "figcaption").text
        perp = table_of(first, "incidents-by-perpetrator", earliest)
        za = list(perp.cells[perp.rows.index("ZA")])
        assert points(bars) == (sum(isinstance(v, int) for v in za), za.count(SUPPRESSED))

        # A new release: announced on /api/stream, fetched and drawn; the choices stay.
        server.publish(second)
        wait_for(driver, "release 2 drawn", lambda d: app_state(d) == ("ready", "2"))
        assert field("release") == "2"
        for key, expected in expected_headlines(second).items():
            assert headline(driver, key) == expected, key
        assert driver.find_element(By.ID, "tables-title").text == "Tables for Jan 2026"
        assert Select(driver.find_element(By.ID, "area-select")).first_selected_option.text == (
            "South Africa"
        )
        cells = driver.find_elements(By.CSS_SELECTOR, "[data-suppressed]")
        assert len(cells) == suppressed_shown(second, earliest)

        log = driver.get_log("performance")
        console = driver.get_log("browser")

    # Every request went to this server, and the page logged no error.
    urls = requested_urls(log)
    assert server.url + "/api/releases/latest" in urls
    assert server.url + "/api/stream" in urls
    assert server.url + "/assets/dashboard.js" in urls
    elsewhere = [u for u in urls if not is_local(u)]
    assert elsewhere == []
    assert [e for e in console if e["level"] == "SEVERE"] == []


@needs_chromium
def test_dashboard_waits_for_the_first_release(
    empty_server: Server, releases: tuple[LatestRelease, LatestRelease]
) -> None:
    with chromium() as driver:
        driver.get(empty_server.url + "/")
        wait_for(driver, "the empty state", lambda d: app_state(d) == ("empty", ""))
        notice = driver.find_element(By.ID, "notice")
        assert notice.is_displayed()
        assert "No release has been published yet" in notice.text
        assert driver.find_elements(By.CSS_SELECTOR, "[data-chart]") == []
        wait_for(
            driver,
            "the live stream",
            lambda d: (
                d.find_element(By.ID, "connection").get_attribute("data-connection") == "open"
            ),
        )
        empty_server.publish(releases[0])
        wait_for(driver, "release 1 drawn", lambda d: app_state(d) == ("ready", "1"))
        assert not driver.find_element(By.ID, "notice").is_displayed()
        assert headline(driver, "incidents") == expected_headlines(releases[0])["incidents"]


@needs_chromium
def test_dashboard_shows_partner_breakdowns_when_the_release_has_them(
    empty_server: Server, partner_release: LatestRelease
) -> None:
    release = partner_release
    latest = periods_of(release.statements)[-1]
    with_partners = {
        s.indicator
        for s in release.statements
        if any(t.period == latest and t.dimension == PARTNER for t in s.tables)
        or any(x.period == latest and x.partner for x in (*s.stats, *s.shares))
    }
    assert {"incidents", "police-share", "time-to-first-response"} < with_partners
    empty_server.publish(release)
    with chromium() as driver:
        driver.get(empty_server.url + "/")
        wait_for(driver, "release 1 drawn", lambda d: app_state(d) == ("ready", "1"))
        # The region's figures are unchanged by the partner tables.
        for key, expected in expected_headlines(release).items():
            assert headline(driver, key) == expected, key
        published, suppressed, _ = incident_trend(release)
        assert points(chart(driver, "incidents-trend")) == (published, suppressed)
        options = driver.find_elements(By.CSS_SELECTOR, "#area-select option")
        areas = [o.get_attribute("value") for o in options]
        assert areas == [REGION, "BW", "MZ", "NA", "ZA", "ZW"]  # partners are not areas

        # A table by partner under each indicator that has partner figures.
        wraps = driver.find_elements(
            By.CSS_SELECTOR, '#indicator-tables [data-dimension="partner"]'
        )
        assert {w.get_attribute("data-indicator") for w in wraps} == with_partners
        assert len(wraps) == len(with_partners)
        cells = driver.find_elements(By.CSS_SELECTOR, "[data-suppressed]")
        expected = suppressed_shown(release, latest) + partner_suppressed_shown(release, latest)
        assert len(cells) == expected
        assert partner_suppressed_shown(release, latest) > 0

        # Partners nested in their countries, suppressed cells marked, numbers as published.
        t = table_of(release, "incidents-by-violence-type", latest, PARTNER)
        wrap = next(
            w for w in wraps if w.get_attribute("data-indicator") == "incidents-by-violence-type"
        )
        groups = wrap.find_elements(By.CSS_SELECTOR, "tr.country-group")
        assert [g.get_attribute("data-country") for g in groups] == sorted(set(t.countries))
        rows = wrap.find_elements(By.CSS_SELECTOR, "tr[data-partner]")
        nesting = [(r.get_attribute("data-country"), r.get_attribute("data-partner")) for r in rows]
        assert nesting == list(zip(t.countries, t.rows, strict=True))
        for row, line, row_total in zip(rows, t.cells, t.row_totals, strict=True):
            shown = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
            assert shown == [
                "suppressed" if v == SUPPRESSED else f"{v:,}" for v in (*line, row_total)
            ]
        console = driver.get_log("browser")
    assert [e for e in console if e["level"] == "SEVERE"] == []

