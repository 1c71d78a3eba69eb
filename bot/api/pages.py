"""The browser side: the dashboard page, its static files (plotly.js from the installed plotly
package: no CDN), and each run's report (the HTML ``bot journal report`` writes)."""

from __future__ import annotations

from pathlib import Path

import plotly
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from bot.api.encode import answer
from bot.api.routes import find_run, journal
from bot.errors import ConfigError
from bot.redact import mask, mask_text
from bot.report import report_page

STATIC = Path(__file__).parent / "static"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
#: Static files change only with the installed package: a browser may keep them for an hour.
_STATIC_CACHE = {"Cache-Control": "private, max-age=3600"}

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def dashboard() -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/static/plotly.min.js")
def plotly_js() -> Response:
    return FileResponse(PLOTLY_JS, media_type="text/javascript", headers=_STATIC_CACHE)


@router.get("/static/{name}")
def static(name: str) -> Response:
    path = STATIC / name
    if name == "index.html" or "/" in name or not path.is_file():
        raise HTTPException(404, f"no static file {name!r}")
    media = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}.get(path.suffix)
    return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})


@router.get("/runs/{run}/report", response_class=HTMLResponse)
def report(request: Request, run: str, theme: str = Query("light", pattern="^(light|dark)$")) -> Response:
    """The run's report page, built from the journal as ``bot journal report`` builds it."""
    j = journal(request)
    r = find_run(j, run)
    shown = {**r, "config": mask(r.get("config")), "error": mask_text(r["error"]) if r.get("error") else None}

    def build() -> str:
        try:
            return mask_text(report_page(j.db, shown, theme=theme))
        except ConfigError as exc:
            raise HTTPException(400, str(exc)) from None

    return HTMLResponse(j.cache.get(r["id"], ("report", theme), build), headers={"Cache-Control": "no-store"})


@router.get("/healthz")
def healthz(request: Request) -> Response:
    """Open to all (no token): 200 while the journal answers, 503 when it does not."""
    try:
        with journal(request).db.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception:  # noqa: BLE001 - any failure to reach the journal is "unhealthy"
        return answer({"status": "journal unreachable"}, 503)
    return answer({"status": "ok"})
