"""GET / (the demo page) and GET /widget.js (the embeddable widget)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def demo_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})


@router.get("/widget.js")
async def widget_script() -> FileResponse:
    # Any site may load the script; what it may call is decided by keys and CORS.
    headers = {"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"}
    return FileResponse(STATIC_DIR / "widget.js", media_type="application/javascript; charset=utf-8", headers=headers)
