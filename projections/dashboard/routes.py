"""The dashboard: a read-only web page over the metrics, board and deal APIs.

``/`` is the pipeline dashboard, ``/deals/{deal_id}`` a deal with its audit timeline, and
``/static/...`` the page's own files (plain HTML, CSS and JavaScript from this package: no build
step, nothing fetched from elsewhere). The pages themselves need no token -- they hold no data;
their JavaScript calls the ``/v1`` API with the token taken from ``?token=`` or localStorage.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC = (Path(__file__).resolve().parent / "static").resolve()

# The pages load only their own files; charts are inline SVG, data comes from the same origin.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

router = APIRouter(include_in_schema=False)


def _file(name: str) -> FileResponse:
    path = (STATIC / name).resolve()
    if not path.is_file() or STATIC not in path.parents:
        raise HTTPException(status_code=404, detail="Not Found")
    return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix), headers=HEADERS)


@router.get("/")
def dashboard() -> FileResponse:
    return _file("index.html")


@router.get("/deals/{deal_id}")
def deal_page(deal_id: str) -> FileResponse:
    return _file("deal.html")


@router.get("/static/{path:path}")
def static(path: str) -> FileResponse:
    return _file(path)
