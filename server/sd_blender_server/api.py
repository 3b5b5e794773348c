"""The HTTP layer: routes, validation errors, auth, and the conversions between the wire models
(schemas.py) and the engine's own objects. Generation lives in jobs.py and the engine."""
import asyncio
import dataclasses
import hmac
import json
import time
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import Match

from . import __version__, timings
from .catalog import UNION_CONTROL_MODES, Catalog
from .config import UNION, ServerConfig
from .frame_request import FrameRequest
from .frame_schemas import FRAME_FIELDS, frame_request_model
from .jobs import TERMINAL_STATES, JobFinished, JobQueue, QueueFull, UnknownJob
from .registry import Entry
from .request import ControlInput, GenerationRequest, LoraInput, Problem
from .schedulers import SCHEDULER_NAMES
from .schemas import ErrorDetail, JobCreated, JobStatus, Limits, job_request_model
from .texture_request import TextureRequest, TextureView
from .texture_schemas import SHARED_FIELDS, texture_request_model

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .cluster_jobs import ClusterJobs
    from .engine import EngineRequest

_KEEPALIVE_SECONDS = 15.0
_POLL_SECONDS = 0.05
_HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _error_response(description: str, headers: dict | None = None) -> dict:
    response = {"model": ErrorDetail, "description": description}
    if headers:
        response["headers"] = headers
    return response


# Error answers declared in the OpenAPI schema (422 is declared by FastAPI itself, on every route
# that takes parameters or a body).
_TOO_LARGE = {413: _error_response("request body larger than --max-body-mb (any route)")}
_UNAUTHORIZED = {
    401: _error_response(
        "missing or wrong bearer token (only when the server has a token)",
        {"WWW-Authenticate": {"description": "always `Bearer`", "schema": {"type": "string"}, "required": True}},
    )
}
_UNKNOWN_JOB = {404: _error_response("no such job, or its results expired (--keep-results, --result-ttl)")}
_QUEUE_FULL = {
    429: _error_response(
        "the queue is full (--max-queue); retry later",
        {
            "Retry-After": {
                "description": "seconds to wait before retrying",
                "schema": {"type": "integer", "minimum": 1},
                "required": True,
            }
        },
    ),
}
_PREVIEW_HEADERS = {
    "X-Preview-Step": {
        "description": "the step the preview was made after", "schema": {"type": "integer"}, "required": True
    },
    "X-Preview-Total": {"description": "the job's steps", "schema": {"type": "integer"}, "required": True},
}
# The links a client (and the stateful fuzz test) follows from a submitted job's id.
_JOB_ID = {"job_id": "$response.body#/id"}
_SUBMITTED = {
    202: {
        "headers": {
            "Location": {"description": "the job's status URL, /v1/jobs/{id}", "schema": {"type": "string"}, "required": True}
        },
        "links": {
            "status": {"operationId": "getJob", "parameters": _JOB_ID},
            "events": {"operationId": "getJobEvents", "parameters": _JOB_ID},
            "image": {"operationId": "getJobImage", "parameters": {**_JOB_ID, "index": 0}},
            "cancel": {"operationId": "cancelJob", "parameters": _JOB_ID},
        },
    }
}
# Once a job's event stream has ended, the job has too: its images are there if it is done.
_FIRST_IMAGE = {"operationId": "getJobImage", "parameters": {"job_id": "$request.path.job_id", "index": 0}}


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
        loc, message = list(item["loc"]), str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "json_invalid":
            loc, message = ["body"], f"is not UTF-8 JSON: {item['ctx']['error']}"
        detail.append({"loc": loc, "msg": f"{field_path(loc)}: {message}", "type": item["type"]})
    return JSONResponse(status_code=422, content={"detail": detail})


def _parse_json(body: bytes) -> object:
    """A request body as JSON in UTF-8 (RFC 8259), any failure a JSONDecodeError saying what is wrong,
    so FastAPI answers it as a validation error (422), not its undeclared 400."""
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as error:
        reason = f"byte {error.start} is not UTF-8 ({error.reason})"
    except json.JSONDecodeError as error:
        reason = str(error)
    except RecursionError:
        reason = "nested too deeply"
    raise json.JSONDecodeError(reason, "", 0)


class _Utf8JsonRequest(Request):
    async def json(self) -> object:
        if not hasattr(self, "_json"):
            self._json = _parse_json(await self.body())
            timings.current_request().parsed = time.perf_counter()
        return self._json


class _Utf8JsonRoute(APIRoute):
    """A route that reads its JSON body with _parse_json."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def read_utf8_json(request: Request) -> Response:
            return await handler(_Utf8JsonRequest(request.scope, request.receive))

        return read_utf8_json


class RequestTimes:
    """ASGI middleware: each HTTP request's clock (timings.RequestClock) starts as it reaches the app
    and stops when its answer's last byte is handed to the HTTP server (or the app is done with it)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        clock = timings.start_request()

        async def send_timed(message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                clock.answer_sent()

        try:
            await self.app(scope, receive, send_timed)
        finally:
            clock.answer_sent()  # also when no answer went out (a client gone): a job waiting on it may start


def _allowed_methods(request: Request) -> list[str]:
    """The methods some route serves at the request's path."""
    return [
        method
        for method in _HTTP_METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in request.app.router.routes)
    ]


async def _method_not_allowed(request: Request, error: HTTPException) -> JSONResponse:
    """405 whose Allow lists every method served at the path: Starlette's lists only those of the
    first route whose path matches (GET for /v1/jobs/{id}, though DELETE is served there too)."""
    allowed = ", ".join(_allowed_methods(request))
    return JSONResponse(
        status_code=405,
        content={"detail": f"{request.method} is not allowed here; this path accepts {allowed}"},
        headers={"Allow": allowed},
    )


async def _queue_full(request: Request, error: QueueFull) -> JSONResponse:
    return JSONResponse(
        status_code=429, content={"detail": str(error)}, headers={"Retry-After": str(error.retry_after)}
    )


async def _job_finished(request: Request, error: JobFinished) -> JSONResponse:
    return JSONResponse(status_code=409, content={"detail": str(error)})


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` is answered 413 before the app reads it."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) <= self.max_bytes:
            await self.app(scope, receive, send)  # the HTTP server stops at the declared length
            return
        # Too long, or of unknown length (chunked): read it here, up to the limit.
        chunks, size, more = [], 0, True
        if declared is None or not declared.isdigit():
            while more and size <= self.max_bytes:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                more = message.get("more_body", False)
        if declared is not None and declared.isdigit() or size > self.max_bytes:
            await self._too_large(scope, receive, send, more)
            return
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def receive_again():
            return replay.pop() if replay else await receive()

        await self.app(scope, receive_again, send)

    async def _too_large(self, scope, receive, send, more: bool) -> None:
        # Read (and drop) a little more, so a client still sending gets the answer, not a reset.
        drained = 0
        while more and drained < 4 * self.max_bytes:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            drained += len(message.get("body", b""))
            more = message.get("more_body", False)
        limit = f"{self.max_bytes / 2**20:g} MB"
        detail = f"request body too large: this server accepts at most {limit} (--max-body-mb)"
        await JSONResponse(status_code=413, content={"detail": detail})(scope, receive, send)


def generation_request(body: "BaseModel") -> GenerationRequest:
    """The engine's request from a validated POST /v1/jobs body."""
    return GenerationRequest(
        **{name: getattr(body, name) for name in type(body).model_fields if name not in ("controls", "loras")},
        controls=_control_inputs(body.controls),
        loras=_lora_inputs(body.loras),
    )


def texture_request(body: "BaseModel") -> TextureRequest:
    """The engine's request from a validated POST /v1/texture-jobs body."""
    return TextureRequest(
        settings=_shared_settings(body, SHARED_FIELDS),
        views=tuple(
            TextureView(_control_inputs(view.controls), view.correspondence, tuple(view.neighbours)) for view in body.views
        ),
        texture_size=body.texture_size,
        exponent_start=body.exponent_start,
        exponent_end=body.exponent_end,
    )


def frame_request(body: "BaseModel") -> FrameRequest:
    """The engine's request from a validated POST /v1/frame-jobs body: each frame an ordinary job
    with its own images."""
    settings = _shared_settings(body, FRAME_FIELDS)

    def frame(images: "BaseModel") -> GenerationRequest:
        controls = tuple(
            ControlInput(**control.model_dump(), image=image) for control, image in zip(body.controls, images.control_images)
        )
        mask = getattr(images, "mask_image", None)  # the anchor has none
        return dataclasses.replace(settings, controls=controls, init_image=images.init_image, mask_image=mask)

    return FrameRequest(tuple(map(frame, body.frames)), body.anchor and frame(body.anchor))


def _shared_settings(body: "BaseModel", fields: tuple[str, ...]) -> GenerationRequest:
    """The fields a request of another kind shares with an ordinary job, as one."""
    return GenerationRequest(
        **{name: getattr(body, name) for name in fields if name != "loras"}, loras=_lora_inputs(body.loras)
    )


def _control_inputs(controls: list) -> tuple[ControlInput, ...]:
    return tuple(ControlInput(**control.model_dump(exclude={"image"}), image=control.image) for control in controls)


def _lora_inputs(loras: list) -> tuple[LoraInput, ...]:
    return tuple(LoraInput(**lora.model_dump()) for lora in loras)


def unserved(problems: list[Problem]) -> RequestValidationError:
    """The catalog's problems with a request as a 422 on the body's fields."""
    return RequestValidationError(
        [{"loc": ("body", *problem.path), "msg": problem.message, "type": "value_error"} for problem in problems]
    )


def _entry_json(entry: Entry, loaded: bool) -> dict:
    item = {
        "name": entry.name,
        "kind": entry.kind,
        "family": entry.family,
        "source": entry.source,
        "location": entry.location,
        "loaded": loaded,
    }
    if entry.reason is not None:
        item["reason"] = entry.reason
    return item


def models_json(catalog: Catalog, base_models_loaded: frozenset[str], controlnets_loaded: frozenset) -> dict:
    """GET /v1/models: every model of the catalog, and which are loaded (the base models by name, the
    ControlNets by key: on any replica of a cluster)."""
    base_models = [
        {**_entry_json(entry, entry.name in base_models_loaded), "default": index == 0}
        for index, entry in enumerate(catalog.registry.of_kind("base"))
    ]
    controlnets = [
        {
            **_entry_json(entry, key in controlnets_loaded),
            "type": entry.control_type,
            **({"types": list(UNION_CONTROL_MODES)} if entry.control_type == UNION else {}),
        }
        for key, entry in catalog.controlnet_entries()
    ]
    return {
        "base_models": base_models,
        "controlnets": controlnets,
        "loras": [_entry_json(entry, False) for entry in catalog.registry.of_kind("lora")],
        "refused": [
            {**_entry_json(entry, False), "kind": entry.refused_kind} for entry in catalog.registry.of_kind("refused")
        ],
        "schedulers": list(SCHEDULER_NAMES),
    }


def limits_json(config: ServerConfig, max_batch: int, parallel_jobs: int) -> dict:
    """GET /v1/limits: what this server accepts, the images its batches may hold, and how many jobs
    (or batches) it runs at once."""
    limits = config.request
    return {
        "max_pixels": limits.max_pixels,
        "width": vars(limits.width),
        "height": vars(limits.height),
        "steps": vars(limits.steps),
        "num_images": vars(limits.num_images),
        "guidance_scale": vars(limits.guidance_scale),
        "strength": vars(limits.strength),
        "prompt_max_length": limits.prompt_max_length,
        "controls": {"max": limits.max_controls},
        "control_weight": vars(limits.control_weight),
        "loras": {"max": limits.max_loras},
        "lora_weight": vars(limits.lora_weight),
        "views": {"max": limits.max_views},
        "frames": {"max": limits.max_frames},
        "texture_size": vars(limits.texture_size),
        "schedulers": list(SCHEDULER_NAMES),
        "max_queue": config.max_queue,
        "job_timeout_s": config.job_timeout,
        "max_body_mb": config.max_body_mb,
        "batch": {"max": max_batch},
        "parallel_jobs": parallel_jobs,
    }


def _bearer_check(token: str | None):
    bearer = HTTPBearer(auto_error=False)

    async def check(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        # async: a sync dependency would cost every request a hop to the thread pool
        if token is None:
            return
        given = credentials.credentials if credentials else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    return check


def create_app(config: ServerConfig, jobs: "JobQueue | ClusterJobs") -> FastAPI:
    """The app around started jobs (this process's JobQueue, or a Ray Serve ingress's ClusterJobs);
    with `config.token`, every route but /health needs it.

    No CORS middleware: browsers get no Access-Control-Allow-Origin header, so other web pages
    cannot read the answers.
    """
    engine = jobs.engine
    job_request = job_request_model(config.request)
    texture_job_request = texture_request_model(config.request)
    frame_job_request = frame_request_model(config.request)
    app = FastAPI(title="sd_blender server", version=__version__, responses=_TOO_LARGE)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(405, _method_not_allowed)

    async def _unknown_job(request: Request, error: UnknownJob) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": jobs.unknown_message(error.args[0])})

    app.add_exception_handler(UnknownJob, _unknown_job)
    app.add_exception_handler(JobFinished, _job_finished)
    app.add_exception_handler(QueueFull, _queue_full)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(RequestTimes)  # the outermost: it sees the whole request
    router = APIRouter(
        prefix="/v1", dependencies=[Depends(_bearer_check(config.token))], responses=_UNAUTHORIZED,
        route_class=_Utf8JsonRoute,
    )

    @app.get("/health", operation_id="health")
    def health() -> dict:
        return jobs.health()

    @router.get("/models", operation_id="listModels")
    def models() -> dict:
        return models_json(engine.catalog, *jobs.loaded_models())

    @router.get("/limits", response_model=Limits, operation_id="getLimits")
    def limits() -> dict:
        return limits_json(config, jobs.max_batch, jobs.parallel_jobs)

    @router.post(
        "/jobs", status_code=202, response_model=JobCreated, operation_id="submitJob", responses={**_SUBMITTED, **_QUEUE_FULL}
    )
    def submit(body: job_request, response: Response) -> JobCreated:
        return queued(generation_request(body), response)

    @router.post(
        "/texture-jobs", status_code=202, response_model=JobCreated, operation_id="submitTextureJob",
        responses={**_SUBMITTED, **_QUEUE_FULL},
    )
    def submit_texture(body: texture_job_request, response: Response) -> JobCreated:
        """A synchronized texture job: the views denoised together, so that they agree (one image
        each, in the views' order); it is then a job like any other, under /v1/jobs/{id}."""
        return queued(texture_request(body), response)

    @router.post(
        "/frame-jobs", status_code=202, response_model=JobCreated, operation_id="submitFrameJob",
        responses={**_SUBMITTED, **_QUEUE_FULL},
    )
    def submit_frames(body: frame_job_request, response: Response) -> JobCreated:
        """A frame job: a chunk of animation frames run as one batch from one seed, each frame's
        self-attention also reading an anchor frame's (cross-frame attention) when there is one; one
        image per frame, in order; it is then a job like any other, under /v1/jobs/{id}."""
        return queued(frame_request(body), response)

    def queued(request: "EngineRequest", response: Response) -> JobCreated:
        # Model, LoRA and ControlNet names resolve only to catalog entries; families must match.
        problems = engine.problems(request)
        if problems:
            raise unserved(problems)
        job = jobs.submit(request, timings.current_request())
        response.headers["Location"] = f"/v1/jobs/{job.id}"
        return JobCreated(id=job.id)

    @router.get("/jobs/{job_id}", response_model=JobStatus, operation_id="getJob", responses=_UNKNOWN_JOB)
    def status(job_id: str) -> dict:
        return jobs.status(job_id)

    @router.delete(
        "/jobs/{job_id}",
        status_code=202,
        response_model=JobStatus,
        operation_id="cancelJob",
        responses={**_UNKNOWN_JOB, 409: _error_response("the job has already finished")},
    )
    def cancel(job_id: str) -> dict:
        return jobs.cancel(job_id)

    @router.get(
        "/jobs/{job_id}/images/{index}.png",
        response_class=Response,
        operation_id="getJobImage",
        responses={200: {"content": {"image/png": {}}}, **_UNKNOWN_JOB},
    )
    async def image(job_id: str, index: int) -> Response:
        # async: the image is in memory, no need of a hop to the thread pool
        job = jobs.get(job_id)
        if not 0 <= index < len(job.images):
            raise HTTPException(404, f"job {job_id} has no image {index} (state: {job.state})")
        timings.current_request().sends_image_of = job.clock
        return Response(job.images[index], media_type="image/png")

    @router.get(
        "/jobs/{job_id}/preview",
        response_class=Response,
        operation_id="getJobPreview",
        responses={
            200: {
                "description": "the latest live preview (at most 256 px on its long side)",
                "content": {"image/png": {}},
                "headers": _PREVIEW_HEADERS,
            },
            204: {"description": "no preview yet (or the job's preview_every is 0)"},
            **_UNKNOWN_JOB,
        },
    )
    def preview(job_id: str) -> Response:
        latest = jobs.get(job_id).preview
        if latest is None:
            return Response(status_code=204)
        headers = {"X-Preview-Step": str(latest.step), "X-Preview-Total": str(latest.total)}
        return Response(latest.png, media_type="image/png", headers=headers)

    @router.get(
        "/jobs/{job_id}/events",
        response_class=StreamingResponse,
        operation_id="getJobEvents",
        responses={200: {"content": {"text/event-stream": {}}, "links": {"image": _FIRST_IMAGE}}, **_UNKNOWN_JOB},
    )
    async def events(job_id: str) -> StreamingResponse:
        job = jobs.get(job_id)

        async def stream():
            sent, idle = 0, 0.0
            while True:
                available = len(job.events)
                for name, data in job.events[sent:available]:
                    if name == "preview":
                        # Only the latest preview is kept: an older one is skipped (the newer one follows).
                        latest = job.preview
                        if latest.step != data["step"]:
                            continue
                        data = latest.event_data()
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
