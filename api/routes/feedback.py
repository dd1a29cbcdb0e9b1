"""POST /feedback: the widget's 👍/👎, appended to a JSONL file."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from api.context import get_ctx
from api.schemas import ERROR_RESPONSES, FeedbackIn, FeedbackOut
from api.security import Principal, json_body, require

router = APIRouter(tags=["feedback"])


@router.post("/feedback", status_code=201, response_model=FeedbackOut, responses=ERROR_RESPONSES, dependencies=[Depends(json_body)])
async def feedback(body: FeedbackIn, request: Request, principal: Annotated[Principal, Depends(require("widget"))]) -> dict[str, Any]:
    ctx = get_ctx(request)
    entry = {
        **body.model_dump(exclude_none=True),
        "request_id": getattr(request.state, "request_id", None),
        "origin": request.headers.get("origin"),
        "role": principal.role,
    }
    feedback_id = await run_in_threadpool(ctx.feedback.record, entry)
    return {"id": feedback_id, "stored": True}
