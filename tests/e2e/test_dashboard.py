"""The dashboard in real headless Chromium, driven over the DevTools protocol.

The page must load, show the figures the API returns (numbers read from the DOM are compared
with the API's JSON) and log no console error or uncaught exception. A screenshot of each page
is written to the test's tmp dir (and to $DEALFLOW_SCREENSHOT_DIR when set).

No extra dependency: the DevTools websocket is spoken with a small RFC 6455 client below.
Skipped when Chromium is missing, unless CI is set (then missing Chromium fails).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from dealflow.runtime import build_services
from engine.importers.crm import import_crm
from engine.persistence.settings import StoreSettings
from engine.scoring.service import train
from tests.conftest import AUTH, TEST_TOKEN
from tests.integration.test_crm_import import slice_of_sample
from tests.live import served, stop_process

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


# -- a minimal websocket client (text frames, client-side masking) ----------------------------


class WebSocket:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlparse(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake failed")
            response += chunk
        head, _, self.buffer = response.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(head.decode(errors="replace"))

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buffer)))
            if not chunk:
                raise ConnectionError("websocket closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _frame(self, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        size = len(payload)
        if size < 126:
            header += bytes([0x80 | size])
        elif size < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", size)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", size)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send(self, text: str) -> None:
        self._frame(0x1, text.encode())

    def recv(self) -> str:
        message = b""
        while True:
            first, second = self._read(2)
            opcode, size = first & 0x0F, second & 0x7F
            if size == 126:
                size = struct.unpack("!H", self._read(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", self._read(8))[0]
            mask = self._read(4) if second & 0x80 else None
            payload = self._read(size)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the browser")
            if opcode == 0x9:
                self._frame(0xA, payload)
                continue
            if opcode in (0x0, 0x1, 0x2):
                message += payload
                if first & 0x80:
                    return message.decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._frame(0x8, b"")
        self.sock.close()


class DevTools:
    """One page target: commands with replies, and every event kept for inspection."""

    def __init__(self, url: str) -> None:
        self.ws = WebSocket(url)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        self.next_id += 1
        ident = self.next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)
        raise TimeoutError(method)

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def open(self, url: str, timeout: float = 30.0) -> str:
        """Navigate and wait until the page says it is done (body[data-state] not loading)."""
        self.call("Page.navigate", {"url": url})
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.evaluate(
                "document.readyState === 'complete' && document.body ? (document.body.dataset.state || '') : ''"
            )
            if state and state != "loading":
                return str(state)
            time.sleep(0.1)
        raise TimeoutError(f"{url} did not finish loading (state {state!r})")

    def errors(self) -> list[str]:
        time.sleep(0.2)
        self.evaluate("0")  # collect whatever the browser sent meanwhile
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                found.append("exception: " + json.dumps(details.get("exception", details))[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append("console: " + json.dumps(params.get("args"))[:500])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                found.append(
                    f"log: {entry.get('source')}: {entry.get('text')} {entry.get('url', '')}"
                )
        return found

    def screenshot(self, path: Path) -> None:
        height = self.evaluate("Math.ceil(document.documentElement.scrollHeight)") or 1800
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1400, "height": int(height), "deviceScaleFactor": 1, "mobile": False},
        )
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        extra = os.environ.get("DEALFLOW_SCREENSHOT_DIR")
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(extra) / path.name)

    def close(self) -> None:
        self.ws.close()


# -- fixtures: a served store with a slice of the CRM sample, and a browser -------------------


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path = find_chromium()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is required in CI (apt-get install chromium)")
        pytest.skip("Chromium not found")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("dashboard")
    services = build_services(
        StoreSettings(database_url=None, home=root / "home"),
        bootstrap_token=TEST_TOKEN,
        run_projections=False,
    )
    import_crm(services.app, slice_of_sample(root / "crm", every=11), progress=False)
    assert train(services.app, "default")["status"] == "trained"  # the score panel's model
    services.projections.catch_up()
    try:
        with served(services) as url:
            yield url
    finally:
        services.close()


@pytest.fixture(scope="module")
def browser(chromium_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    process = subprocess.Popen(
        [
            chromium_path,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--window-size=1400,1800",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert process.poll() is None, "Chromium exited at start"
            assert time.monotonic() < deadline, "Chromium did not open its DevTools port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t.get("type") == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            tools.call(domain)
        yield tools
        tools.close()
    finally:
        stop_process(process, timeout=10)


# -- comparing what the page shows with what the API says --------------------------------------


def _number(text: str) -> float | None:
    cleaned = re.sub(r"[^0-9.\-]", "", text.replace("–", ""))
    return float(cleaned) if cleaned not in ("", "-", ".") else None


def _same(raw: str, api_value: Any) -> bool:
    if api_value is None:
        return raw == ""
    return raw != "" and abs(float(raw) - float(api_value)) < 1e-9


def _shown(text: str, api_value: Any, kind: str) -> bool:
    """The visible text is the API value, rounded as the page formats it."""
    if api_value is None:
        return text.strip() == "–"
    shown = _number(text)
    if shown is None:
        return False
    value = float(api_value)
    if kind == "pct":
        return abs(shown - value * 100) <= 0.05 + 1e-9
    if kind == "days":
        return abs(shown - value) <= 0.05 + 1e-9
    return abs(shown - value) <= 0.5 + 1e-9  # counts and whole currency units


KPI_KINDS = {
    "open_deals": "int",
    "open_value": "money",
    "weighted_value": "money",
    "won": "int",
    "lost": "int",
    "win_rate": "pct",
    "won_value": "money",
    "avg_days_to_close_won": "days",
    "median_days_to_close_won": "days",
    "qualified_leads": "int",
    "conversion_rate": "pct",
    "avg_open_deal_age_days": "days",
    "stale_deals": "int",
}

FIGURES_JS = """
(() => {
  const pick = (sel) => Array.from(document.querySelectorAll(sel)).map((e) => ({
    metric: e.dataset.metric, value: e.dataset.value, text: e.textContent,
    stage: e.closest('[data-stage]') ? e.closest('[data-stage]').dataset.stage : null,
    key: e.closest('[data-key]') ? e.closest('[data-key]').dataset.key : null,
  }));
  return {
    kpis: pick('#kpis [data-metric]'),
    board: Array.from(document.querySelectorAll('#board .column')).map((c) => ({
      stage: c.dataset.stage, count: c.dataset.count, value: c.dataset.value, weighted: c.dataset.weighted,
      cards: c.querySelectorAll('.deal').length, stale_cards: c.querySelectorAll('.deal.stale').length,
      text: c.querySelector('.totals').textContent })),
    funnel: pick('#funnel table [data-metric]'),
    industry: pick('#by-industry table [data-metric]'),
    lead_source: pick('#by-lead-source table [data-metric]'),
    stale: pick('#stale [data-metric]'),
    stale_rows: document.querySelectorAll('#stale-table tbody tr').length,
    coverage: pick('#coverage [data-metric]'),
    svgs: document.querySelectorAll('svg').length,
  };
})()
"""


def test_dashboard_shows_the_api_figures_without_console_errors(
    server: str, browser: DevTools, tmp_path: Path
) -> None:
    # Without a token the page asks for one (and logs nothing bad).
    assert browser.open(f"{server}/") == "needs-token"
    assert browser.evaluate("!document.getElementById('token-panel').classList.contains('hidden')")

    # A fixed as_of (the export's last day) so that age-based figures do not move between the
    # page's requests and the test's.
    target, as_of = "5000000", "2017-12-31T23:59:59Z"
    state = browser.open(
        f"{server}/?token={TEST_TOKEN}&pipeline=default&target={target}&as_of=2017-12-31"
    )
    assert state == "ready", browser.evaluate("document.getElementById('message').textContent")
    figures = browser.evaluate(FIGURES_JS)
    browser.screenshot(tmp_path / "dashboard.png")

    api = httpx.Client(base_url=server, headers=AUTH, timeout=30)
    metrics = api.get(
        "/v1/pipelines/default/metrics", params={"target": target, "as_of": as_of}
    ).json()
    board = api.get("/v1/pipelines/default/board", params={"limit": 8, "as_of": as_of}).json()
    industry = api.get(
        "/v1/pipelines/default/metrics/breakdown", params={"by": "industry", "as_of": as_of}
    ).json()
    lead_source = api.get(
        "/v1/pipelines/default/metrics/breakdown", params={"by": "lead_source", "as_of": as_of}
    ).json()
    assert metrics["as_of"].startswith("2017-12-31T23:59:59")
    assert metrics["won"] > 0 and metrics["lost"] > 0 and metrics["open_deals"] > 0

    kpis = {f["metric"]: f for f in figures["kpis"]}
    assert set(kpis) == set(KPI_KINDS)
    for key, kind in KPI_KINDS.items():
        assert _same(kpis[key]["value"], metrics[key]), (key, kpis[key], metrics[key])
        assert _shown(kpis[key]["text"], metrics[key], kind), (key, kpis[key]["text"], metrics[key])

    columns = {c["stage"]: c for c in figures["board"]}
    assert list(columns) == [c["stage"] for c in board["columns"]]
    for column in board["columns"]:
        shown = columns[column["stage"]]
        assert int(shown["count"]) == column["count"]
        assert _same(shown["value"], column["value"]) and _same(
            shown["weighted"], column["weighted_value"]
        )
        assert shown["cards"] == len(column["deals"])
        assert shown["stale_cards"] == sum(1 for d in column["deals"] if d["stale"])
        assert f"{column['count']:,} deals" in shown["text"]

    stages = {s["stage"]: s for s in metrics["stages"]}
    funnel = [f for f in figures["funnel"]]
    assert {f["stage"] for f in funnel} == set(stages)
    fields = {
        "stage.entered": "entered",
        "stage.advanced": "advanced",
        "stage.conversion": "conversion_rate",
        "stage.open_deals": "open_deals",
        "stage.stale_deals": "stale_deals",
    }
    for f in funnel:
        api_value = stages[f["stage"]][fields[f["metric"]]]
        assert _same(f["value"], api_value), f
        assert _shown(
            f["text"], api_value, "pct" if f["metric"] == "stage.conversion" else "int"
        ), f

    for shown_rows, data in (
        (figures["industry"], industry),
        (figures["lead_source"], lead_source),
    ):
        rows = {("" if r["key"] is None else r["key"]): r for r in data["rows"]}
        assert {f["key"] for f in shown_rows} == set(rows)
        for f in shown_rows:
            api_value = rows[f["key"]][f["metric"]]
            assert _same(f["value"], api_value), f
            kind = {"win_rate": "pct", "won_value": "money", "avg_days_to_close_won": "days"}.get(
                f["metric"], "int"
            )
            assert _shown(f["text"], api_value, kind), f
    assert "technolgy" not in {f["key"] for f in figures["industry"]}

    stale = {f["metric"]: f for f in figures["stale"]}
    assert _same(stale["stale.count"]["value"], metrics["stale_deals"])
    assert figures["stale_rows"] == min(15, metrics["stale_deals"])
    coverage = {f["metric"]: f for f in figures["coverage"]}
    assert _same(coverage["coverage_ratio"]["value"], metrics["coverage_ratio"])
    assert coverage["shape.label"]["value"] == (metrics["shape"]["label"] or "")
    assert figures["svgs"] >= 4  # funnel, time in stage, two breakdown charts

    # The forecast panel (issue 12): each month's figures as the forecast API gives them, for
    # the twelve months from the as-of month, with the monthly target (the target / 12).
    forecast = api.get(
        "/v1/pipelines/default/forecast",
        params={"from": "2017-12", "to": "2018-11", "target": "416666.67", "as_of": as_of},
    ).json()
    shown_months = browser.evaluate(
        "Array.from(document.querySelectorAll('#forecast tr[data-month]')).map((tr) =>"
        " [tr.dataset.month, Array.from(tr.querySelectorAll('[data-metric]')).map((e) =>"
        " [e.dataset.metric, e.dataset.value])])"
    )
    assert [m for m, _ in shown_months] == [r["month"] for r in forecast["months"]] + ["Total"]
    for (month, values), row in zip(
        shown_months, [*forecast["months"], forecast["totals"]], strict=True
    ):
        expected = [
            ["forecast.closed_won", row["closed_won"]["value"]],
            ["forecast.commit", row["commit"]["value"]],
            ["forecast.commit_weighted", row["commit"]["weighted_value"]],
            ["forecast.best_case", row["best_case"]["value"]],
            ["forecast.pipeline", row["pipeline"]["value"]],
            ["forecast.target", row["target"]],
            ["forecast.gap", row["gap"]],
        ]
        assert values == expected, month
    # Each board card shows its deal's first next step, as the board API gives it.
    cards = browser.evaluate(
        "Array.from(document.querySelectorAll('#board .deal')).map((d) =>"
        " [d.dataset.deal, (d.querySelector('.next-step') || {}).textContent || null])"
    )
    steps = {d["deal_id"]: d["next_step"] for c in board["columns"] for d in c["deals"]}
    assert cards and all(
        text == (None if steps[deal] is None else "→ " + steps[deal]["text"])
        for deal, text in cards
    )
    assert any(text for _, text in cards)

    # The top-scored panel: the scores the API gives, in its order, from the recorded model.
    scored = api.get(
        "/v1/deals",
        params={"pipeline_id": "default", "sort": "score", "limit": 10, "as_of": as_of},
    ).json()
    shown_scores = browser.evaluate(
        "Array.from(document.querySelectorAll('#scored tr[data-deal]')).map((tr) =>"
        " [tr.dataset.deal, tr.querySelector('[data-metric=score]').dataset.value])"
    )
    assert scored["model"]["version"] == 1
    assert shown_scores == [[d["deal_id"], str(d["score"])] for d in scored["deals"]]
    assert len(shown_scores) == 10

    assert browser.errors() == []


def test_deal_page_shows_the_deal_and_its_timeline(
    server: str, browser: DevTools, tmp_path: Path
) -> None:
    api = httpx.Client(base_url=server, headers=AUTH, timeout=30)
    won = api.get(
        "/v1/deals", params={"pipeline_id": "default", "status": "won", "limit": 1}
    ).json()["deals"][0]
    state = browser.open(f"{server}/deals/{won['deal_id']}?token={TEST_TOKEN}")
    assert state == "ready"
    browser.screenshot(tmp_path / "deal.png")
    deal = api.get(f"/v1/deals/{won['deal_id']}").json()
    history = api.get(f"/v1/deals/{won['deal_id']}/history").json()
    shown = browser.evaluate(
        "({amount: document.querySelector('[data-metric=\"deal.amount\"]').dataset.value,"
        " title: document.querySelector('#deal h3').textContent,"
        " events: Array.from(document.querySelectorAll('.timeline li')).map((li) => li.dataset.type),"
        " chips: document.querySelectorAll('.timeline .chip.held').length})"
    )
    assert shown["title"] == deal["name"]
    assert _same(shown["amount"], deal["amount"])
    assert shown["events"] == [e["type"] for e in history["events"]]
    assert shown["events"][-1] == "won"
    assert shown["chips"] >= 9  # the criteria checked when the deal moved and when it was won
    assert browser.errors() == []


def test_a_bad_token_is_reported_on_the_page(server: str, browser: DevTools) -> None:
    browser.events.clear()
    assert browser.open(f"{server}/?token=not-a-token") == "needs-token"
    text = browser.evaluate("document.getElementById('message').textContent")
    assert "not accepted" in text
    # The browser notes the 401 response (which also shows the error capture works), and that
    # is the only error.
    errors = browser.errors()
    assert errors and all("401" in e for e in errors), errors
