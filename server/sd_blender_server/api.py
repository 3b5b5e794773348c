"""The HTTP layer: routes, validation errors, auth. Generation lives in engine.py and jobs.py."""
from __future__ import annotations

import asyncio
import hmac
import json

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from . import __version__
from .jobs import TERMINAL_STATES, JobFinished, JobQueue, UnknownJob
from .schemas import SCHEDULERS, JobCreated, JobRequest, JobStatus

_KEEPALIVE_SECONDS = 15.0
_POLL_SECONDS = 0.05


def field_path(loc: tuple | list) -> str:
    """('body', 'controls', 0, 'type') -> 'controls[0].type'."""
    path = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path or "body"


async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """422 whose every message starts with the field it is about."""
    detail = []
    for item in error.errors():
        message = str(item["msg"]).removeprefix("Value error, ")
        detail.append({"loc": list(item["loc"]), "msg": f"{field_path(item['loc'])}: {message}", "type": item["type"]})
    return JSONResponse(status_code=422, content={"detail": detail})


async def _unknown_job(request: Request, error: UnknownJob) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": f"no job {error.args[0]} (unknown, or dropped after finishing)"})


async def _job_finished(request: Request, error: JobFinished) -> JSONResponse:
    return JSONResponse(status_code=409, content={"detail": str(error)})


def _bearer_check(token: str | None):
    bearer = HTTPBearer(auto_error=False)

    def check(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is None:
            return
        given = credentials.credentials if credentials else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    return check


def create_app(jobs: JobQueue, token: str | None = None) -> FastAPI:
    """The app around a started JobQueue; with `token`, every route but /health needs it."""
    engine = jobs.engine
    app = FastAPI(title="sd_blender server", version=__version__)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(UnknownJob, _unknown_job)
    app.add_exception_handler(JobFinished, _job_finished)
    router = APIRouter(prefix="/v1", dependencies=[Depends(_bearer_check(token))])

    @app.get("/health")
    def health() -> dict:
        description = engine.describe()
        return {
            "status": "ok",
            "device": description["device"],
            "dtype": description["dtype"],
            "model": description["model"],
            "loaded": {
                "base_model": description["base_model"]["loaded"],
                "controlnets": [item["type"] for item in description["controlnets"] if item["loaded"]],
            },
            "load_counts": description["load_counts"],
            "queue_length": jobs.queue_length,
        }

    @router.get("/models")
    def models() -> dict:
        description = engine.describe()
        return {
            "base_models": description["base_models"],
            "controlnets": description["controlnets"],
            "loras": description["loras"],
            "refused": description["refused"],
            "schedulers": list(SCHEDULERS),
        }

    @router.post("/jobs", status_code=202, response_model=JobCreated)
    def submit(body: JobRequest, response: Response) -> JobCreated:
        # Model, LoRA and ControlNet names resolve only to registry entries; families must match.
        unserved = [{"loc": loc, "msg": message, "type": "value_error"} for loc, message in engine.check(body)]
        if unserved:
            raise RequestValidationError(unserved)
        job = jobs.submit(body)
        response.headers["Location"] = f"/v1/jobs/{job.id}"
        return JobCreated(id=job.id)

    @router.get("/jobs/{job_id}", response_model=JobStatus)
    def status(job_id: str) -> dict:
        return jobs.status(job_id)

    @router.delete("/jobs/{job_id}", status_code=202, response_model=JobStatus)
    def cancel(job_id: str) -> dict:
        return jobs.cancel(job_id)

    @router.get(
        "/jobs/{job_id}/images/{index}.png", response_class=Response, responses={200: {"content": {"image/png": {}}}}
    )
    def image(job_id: str, index: int) -> Response:
        job = jobs.get(job_id)
        if not 0 <= index < len(job.images):
            raise HTTPException(404, f"job {job_id} has no image {index} (state: {job.state})")
        return Response(job.images[index], media_type="image/png")

    @router.get(
        "/jobs/{job_id}/events", response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}}
    )
    async def events(job_id: str) -> StreamingResponse:
        job = jobs.get(job_id)

        async def stream():
            sent, idle = 0, 0.0
            while True:
                available = len(job.events)
                for name, data in job.events[sent:available]:
                    yield f"event: {name}\ndata: {json.dumps(data)}\n\n"
                    if name == "state" and data["state"] in TERMINAL_STATES:
                        return
                if available > sent:
                    sent, idle = available, 0.0
                    continue
                await asyncio.sleep(_POLL_SECONDS)
                idle += _POLL_SECONDS
                if idle >= _KEEPALIVE_SECONDS:
                    yield ": keep-alive\n\n"
                    idle = 0.0

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    app.include_router(router)
    return app
