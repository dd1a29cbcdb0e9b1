"""GET / (the demo page) and GET /widget.js (the embeddable widget)."""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse

from api.context import get_ctx

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)


WIDGET_TAG = '<script src="/widget.js" defer></script>'


@router.get("/")
async def demo_page(request: Request) -> HTMLResponse:
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    public_key = get_ctx(request).settings.public_key
    if public_key:  # when keys are required, the demo's widget uses the public key like any embedding page
        page = page.replace(WIDGET_TAG, f'<script src="/widget.js" data-key="{html.escape(public_key)}" defer></script>')
    return HTMLResponse(page, headers={"Cache-Control": "no-cache"})


@router.get("/widget.js")
async def widget_script() -> FileResponse:
    # Any site may load the script; what it may call is decided by keys and CORS.
    headers = {"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"}
    return FileResponse(STATIC_DIR / "widget.js", media_type="application/javascript; charset=utf-8", headers=headers)
