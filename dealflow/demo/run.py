"""`dealflow demo`: a fresh embedded store, the CRM sample in it, headline metrics, the dashboard.

1. The store is SQLite under ``$DEALFLOW_HOME/demo`` (default ``./.dealflow/demo``, or
   ``--home``), whatever ``DATABASE_URL`` says. That directory, and only it, is wiped first; a
   non-empty directory without the demo's marker file is refused rather than wiped.
2. The CRM export comes from ``$DEALFLOW_DEMO_DATA``, else ``../shared/data/crm-sales-opportunities``
   next to the repository, else the copy bundled in ``dealflow/demo/sample_data/crm``.
3. It is imported through the batch path (:mod:`engine.importers.crm`).
4. The API (with the projections and the dashboard) starts on ``--host``/``--port``; the demo
   waits for the projections to reach the import's last position through
   ``GET /v1/projections/wait``, then prints the headline metrics read from the same API the
   dashboard uses, so what the terminal shows is what the page shows.
5. It serves until Ctrl-C (or SIGTERM); ``--no-serve`` stops after printing.

The bootstrap token is ``$DEALFLOW_BOOTSTRAP_TOKEN`` or a fresh random one, printed with the
dashboard URL and a curl line.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from engine.persistence.settings import StoreSettings
from engine.settings import Settings

MARKER = ".dealflow-demo"
PACKAGE_DATA = Path(__file__).resolve().parent / "sample_data" / "crm"
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "crm-sales-opportunities"
PIPELINE = "crm"  # shaped like the sample (dealflow.demo.crm_pipeline)


def demo_home(home: Path | None = None) -> Path:
    if home is not None:
        return home
    return Settings.load().home / "demo"


def find_data(data: Path | None = None) -> Path:
    candidates = [data] if data is not None else []
    configured = Settings.load().demo_data
    if configured is not None:
        candidates.append(configured)
    candidates += [SHARED_DATA, PACKAGE_DATA]
    for candidate in candidates:
        if candidate is not None and (candidate / "sales_pipeline.csv").is_file():
            return candidate
    raise FileNotFoundError(
        "no CRM sample found (looked in: " + ", ".join(str(c) for c in candidates) + ")"
    )


def fresh_store(home: Path) -> StoreSettings:
    """Wipe the demo's own directory (only if it is the demo's) and return its settings."""
    if home.exists():
        if not home.is_dir():
            raise RuntimeError(f"{home} exists and is not a directory")
        if any(home.iterdir()) and not (home / MARKER).exists():
            raise RuntimeError(
                f"{home} is not empty and was not created by `dealflow demo`; "
                "refusing to wipe it (choose another --home)"
            )
        shutil.rmtree(home)
    home.mkdir(parents=True)
    (home / MARKER).write_text("created by `dealflow demo`; wiped by the next demo run\n")
    return StoreSettings(database_url=None, home=home)


class _Server:
    """uvicorn in a background thread, so the main thread can talk to it and wait for Ctrl-C."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn

        self.server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(
            target=self.server.run, name="dealflow-demo-api", daemon=True
        )

    def start(self, timeout: float = 30.0) -> int:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the API server did not start (is the port free?)")
            if time.monotonic() > deadline:
                raise RuntimeError("the API server did not start in time")
            time.sleep(0.05)
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def wait_for_projections(client: httpx.Client, position: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(
            "/v1/projections/wait", params={"position": position, "timeout": 10}, timeout=30
        )
        if response.status_code == 200:
            if response.json().get("reached"):
                return
        elif response.status_code not in (202, 408, 503, 504):
            response.raise_for_status()
        if time.monotonic() > deadline:
            raise TimeoutError(f"projections did not reach position {position} in {timeout:.0f} s")
        time.sleep(0.2)


def fetch_headline(client: httpx.Client, as_of: str | None = None) -> dict[str, Any]:
    params = {"as_of": as_of} if as_of else {}
    metrics = client.get(f"/v1/pipelines/{PIPELINE}/metrics", params=params, timeout=60)
    metrics.raise_for_status()
    return metrics.json()  # type: ignore[no-any-return]


def fetch_industries(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get(
        f"/v1/pipelines/{PIPELINE}/metrics/breakdown", params={"by": "industry"}, timeout=60
    )
    response.raise_for_status()
    return list(response.json().get("rows", []))


def _money(value: Any) -> str:
    if value is None:
        return "-"
    return f"${float(value):,.0f}"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{float(value) * 100:.1f}%"


def _days(value: Any) -> str:
    return "-" if value is None else f"{float(value):,.1f} d"


def _int(value: Any) -> str:
    return "-" if value is None else f"{int(value):,}"


HEADLINES = (
    ("Open deals", "open_deals", _int),
    ("Pipeline value (open)", "open_value", _money),
    ("Weighted pipeline value", "weighted_value", _money),
    ("Won deals", "won", _int),
    ("Lost deals", "lost", _int),
    ("Win rate", "win_rate", _pct),
    ("Won value", "won_value", _money),
    ("Avg days to close (won)", "avg_days_to_close_won", _days),
    ("Median days to close (won)", "median_days_to_close_won", _days),
    ("Stale deals", "stale_deals", _int),
)


def print_headline(
    console: Any,
    now: dict[str, Any],
    at_export: dict[str, Any] | None,
    export_date: str,
    industries: list[dict[str, Any]],
) -> None:
    from rich.table import Table

    table = Table(title=f"Headline metrics: pipeline '{PIPELINE}'", title_justify="left")
    table.add_column("metric")
    table.add_column("today", justify="right")
    if at_export is not None:
        table.add_column(f"at the export date ({export_date})", justify="right")
    for label, key, fmt in HEADLINES:
        cells = [label, fmt(now.get(key))]
        if at_export is not None:
            cells.append(fmt(at_export.get(key)))
        table.add_row(*cells)
    console.print(table)
    if at_export is not None:
        console.print(
            "[dim]The sample ends in 2017: judged today every open deal has overstayed its stage, "
            "so the export-date column shows what the team saw then.[/dim]"
        )

    rows = sorted(
        industries,
        key=lambda r: (r.get("win_rate") is None, -(r.get("win_rate") or 0), str(r.get("key"))),
    )
    by_industry = Table(title="Win rate by industry", title_justify="left")
    for column, justify in (
        ("industry", "left"),
        ("deals", "right"),
        ("won", "right"),
        ("lost", "right"),
        ("win rate", "right"),
        ("won value", "right"),
        ("avg days to close", "right"),
    ):
        by_industry.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        by_industry.add_row(
            str(row.get("key")) if row.get("key") is not None else "[dim](no industry)[/dim]",
            _int(row.get("deals")),
            _int(row.get("won")),
            _int(row.get("lost")),
            _pct(row.get("win_rate")),
            _money(row.get("won_value")),
            _days(row.get("avg_days_to_close_won")),
        )
    console.print(by_industry)


def run_demo(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    serve: bool = True,
    home: Path | None = None,
    data: Path | None = None,
    console: Any = None,
) -> int:
    from rich.console import Console

    from dealflow.demo.crm_pipeline import estimate_close_dates, install
    from dealflow.demo.revenue_report import print_revenue
    from dealflow.http import create_app
    from dealflow.runtime import build_services
    from engine.importers.crm import import_crm, print_report
    from engine.scoring.service import train

    console = console or Console()
    directory = demo_home(home)
    settings = fresh_store(directory)
    source = find_data(data)
    token = Settings.load().bootstrap_token or secrets.token_urlsafe(24)
    console.print(f"[bold]dealflow demo[/bold]: fresh embedded store in {directory.resolve()}")

    services = build_services(settings, bootstrap_token=token, run_projections=True)
    server: _Server | None = None
    try:
        install(services.app, PIPELINE)
        report = import_crm(services.app, source, pipeline_id=PIPELINE, console=console)
        print_report(report, console)
        estimated = estimate_close_dates(services.app, source, report["export_date"])
        with console.status("training the lead-scoring model on the closed deals..."):
            trained = train(services.app, PIPELINE)
        console.print(
            f"{estimated:,} Engaging deals got an estimated expected close date; scoring model: "
            + (
                f"version {trained['version']}"
                if trained["status"] == "trained"
                else trained["reason"]
            )
            + f" ({trained['deals']:,} closed deals, {trained['won']:,} won)"
        )
        position = services.app.max_position()

        server = _Server(create_app(services), host, port if serve else 0)
        bound = server.start()
        base = f"http://{host}:{bound}"
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers) as client:
            with console.status("waiting for the projections to catch up..."):
                started = time.monotonic()
                wait_for_projections(client, position)
            console.print(
                f"projections caught up with position {position:,} "
                f"in {time.monotonic() - started:.1f} s"
            )
            now = fetch_headline(client)
            export_end = f"{report['export_date']}T23:59:59Z"
            try:
                at_export: dict[str, Any] | None = fetch_headline(client, export_end)
            except httpx.HTTPError:
                at_export = None
            print_headline(console, now, at_export, report["export_date"], fetch_industries(client))
            print_revenue(console, client, PIPELINE, report["export_date"])

        if not serve:
            return 0
        shown = host if host not in ("0.0.0.0", "::") else "127.0.0.1"
        url = f"http://{shown}:{bound}"
        console.print()
        # soft_wrap: long URLs stay on one logical line, so they can be copied whole.
        from rich.markup import escape

        link, secret, query = escape(url), escape(token), escape(quote(token, safe=""))
        day = report["export_date"]
        lines = [
            # As of the sample's last day: judged today, every open deal is years past its limit.
            f"[bold green]Dashboard:[/bold green] {link}/?token={query}&pipeline={PIPELINE}&as_of={day}",
            f"  as it stands today: {link}/?token={query}&pipeline={PIPELINE}",
            f"[bold]Bootstrap token[/bold] (every scope): {secret}",
            f"  curl -H 'Authorization: Bearer {secret}' {link}/v1/pipelines/{PIPELINE}/metrics",
        ]
        for line in lines:
            console.print(line, soft_wrap=True)
        console.print("Serving until Ctrl-C.")
        _wait_for_signal(server)
        return 0
    finally:
        if server is not None:
            server.stop()
        services.close()


def _wait_for_signal(server: _Server) -> None:
    stop = threading.Event()

    def _stop(*_: Any) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop.is_set() and server.thread.is_alive():
            stop.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
