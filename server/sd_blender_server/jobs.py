"""The job queue: one worker thread owns the engine (and so the device) and runs jobs in order."""
from __future__ import annotations

import logging
import queue
import secrets
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone

import torch

from .engine import GenerationEngine, JobCancelled, ModelLoadError, with_seed
from .images import encode_png
from .schemas import JobRequest

log = logging.getLogger(__name__)

TERMINAL_STATES = ("done", "failed", "cancelled")
MAX_FINISHED_JOBS = 200


class UnknownJob(KeyError):
    pass


class JobFinished(Exception):
    pass


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Job:
    id: str
    request: JobRequest
    parameters: dict
    state: str = "queued"
    step: int = 0
    total: int = 0
    error: str | None = None
    images: list[bytes] = field(default_factory=list)
    created_at: str = field(default_factory=_now)
    started_at: str | None = None
    finished_at: str | None = None
    cancel_requested: bool = False
    # Append-only, so a stream can read it by index and never skip or repeat an event.
    events: list[tuple[str, dict]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    def status(self) -> dict:
        return {
            "id": self.id,
            "state": self.state,
            "progress": {"step": self.step, "total": self.total},
            "error": self.error,
            "images": [f"/v1/jobs/{self.id}/images/{index}.png" for index in range(len(self.images))],
            "parameters": self.parameters,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


class JobQueue:
    """FIFO jobs for one engine. Keeps the newest `max_finished` finished jobs, drops older ones."""

    def __init__(self, engine: GenerationEngine, max_finished: int = MAX_FINISHED_JOBS):
        self.engine = engine
        self._max_finished = max_finished
        self._jobs: dict[str, Job] = {}
        self._finished_order: deque[str] = deque()
        self._pending: queue.Queue[Job] = queue.Queue()
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._work, name="sd-blender-worker", daemon=True)

    def start(self) -> None:
        self._worker.start()

    @property
    def queue_length(self) -> int:
        """Jobs waiting to run (the running one not counted)."""
        with self._lock:
            return sum(job.state == "queued" for job in self._jobs.values())

    def submit(self, request: JobRequest) -> Job:
        request = with_seed(request)
        job = Job(id=secrets.token_hex(16), request=request, parameters=self.engine.parameters(request))
        job.total = request.steps
        with self._lock:
            self._jobs[job.id] = job
            self._set_state(job, "queued")
        self._pending.put(job)
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            if job_id not in self._jobs:
                raise UnknownJob(job_id)
            return self._jobs[job_id]

    def status(self, job_id: str) -> dict:
        job = self.get(job_id)
        with self._lock:
            return job.status()

    def cancel(self, job_id: str) -> dict:
        """A queued job is cancelled now, a running one at its next step."""
        job = self.get(job_id)
        with self._lock:
            if job.finished:
                raise JobFinished(f"job {job_id} already finished ({job.state})")
            job.cancel_requested = True
            if job.state == "queued":
                self._finish(job, "cancelled")
            return job.status()

    def _set_state(self, job: Job, state: str) -> None:
        job.state = state
        job.events.append(("state", job.status()))

    def _finish(self, job: Job, state: str, error: str | None = None) -> None:
        job.error = error
        job.finished_at = _now()
        self._set_state(job, state)
        self._finished_order.append(job.id)
        while len(self._finished_order) > self._max_finished:
            self._jobs.pop(self._finished_order.popleft(), None)

    def _work(self) -> None:
        while True:
            job = self._pending.get()
            with self._lock:
                if job.state != "queued":
                    continue
                job.started_at = _now()
                self._set_state(job, "running")
            self._run(job)

    def _on_step(self, job: Job, step: int, total: int) -> None:
        with self._lock:
            job.step, job.total = step, total
            job.events.append(("progress", {"step": step, "total": total}))

    def _run(self, job: Job) -> None:
        try:
            result = self.engine.generate(
                job.request,
                on_step=lambda step, total: self._on_step(job, step, total),
                should_cancel=lambda: job.cancel_requested,
            )
            images = [encode_png(image, result.parameters, index) for index, image in enumerate(result.images)]
        except JobCancelled:
            with self._lock:
                self._finish(job, "cancelled")
        except torch.cuda.OutOfMemoryError as error:
            torch.cuda.empty_cache()
            log.warning("job %s ran out of GPU memory: %s", job.id, error)
            with self._lock:
                self._finish(job, "failed", "out of GPU memory: try a smaller width/height or fewer images")
        except ModelLoadError as error:
            log.error("job %s: %s", job.id, error)
            with self._lock:
                self._finish(job, "failed", str(error))
        except Exception as error:
            log.exception("job %s failed", job.id)
            with self._lock:
                self._finish(job, "failed", f"{type(error).__name__}: {error}")
        else:
            with self._lock:
                job.images = images
                self._finish(job, "done")
