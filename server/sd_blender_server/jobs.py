"""The job queue: one worker thread owns the engine (and so the device) and runs jobs in order,
each with the waiting jobs that can share its pipeline call (a batch, up to --max-batch images)."""
from __future__ import annotations

import base64
import functools
import logging
import math
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from PIL import Image

from .batching import image_count
from .config import ServerConfig
from .errors import EngineError, JobCancelled
from .images import encode_png, encode_preview
from .timings import JobClock, RequestClock

if TYPE_CHECKING:
    from .engine import EngineRequest, GenerationEngine, GenerationResult

log = logging.getLogger(__name__)

# A job's states, in the order it passes through them; the last three are final.
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
TERMINAL_STATES = JOB_STATES[2:]
_DEFAULT_JOB_SECONDS = 5.0  # the Retry-After guess before any job has run


class UnknownJob(KeyError):
    pass


class QueueFull(Exception):
    """More jobs waiting than the server accepts; `retry_after` is an estimate in seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class JobFinished(Exception):
    pass


@dataclass(frozen=True)
class Preview:
    """A job's latest live preview: its step of `total`, and the PNG."""

    step: int
    total: int
    width: int
    height: int
    png: bytes

    def event_data(self) -> dict:
        """The data of an SSE `preview` event."""
        image = base64.b64encode(self.png).decode("ascii")
        return {"step": self.step, "total": self.total, "width": self.width, "height": self.height, "image": image}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Job:
    id: str
    request: EngineRequest | None
    parameters: dict
    clock: JobClock
    state: str = "queued"
    step: int = 0
    total: int = 0
    error: str | None = None
    images: list[bytes] = field(default_factory=list)
    created_at: str = field(default_factory=_now)
    started_at: str | None = None
    finished_at: str | None = None
    cancel_requested: bool = False
    deadline: float | None = None  # time.monotonic() past which a running job is stopped
    started: float | None = None  # time.monotonic() when it started running
    expires: float | None = None  # time.monotonic() when a finished job is dropped
    # Append-only, so a stream can read it by index and never skip or repeat an event. A `preview`
    # event holds only its step: the job keeps the latest preview's image alone.
    events: list[tuple[str, dict]] = field(default_factory=list)
    preview: Preview | None = None
    batch: dict | None = None  # once running: the jobs and images of the pipeline call it shares

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
            "preview_step": self.preview and self.preview.step,
            "parameters": self.parameters,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "batch": self.batch,
            "timings": self.clock.milliseconds(),
        }


class JobTable:
    """Jobs by id, for one process's routes: finished jobs are kept `config.result_ttl` seconds, at
    most the newest `config.keep_results` of them (older ones are dropped with their images); at most
    `config.max_queue` jobs wait (QueueFull past it). Subclasses run them: JobQueue on this process's
    engine, cluster_jobs.ClusterJobs on Ray Serve replicas."""

    def __init__(self, engine: GenerationEngine, config: ServerConfig):
        self.engine = engine
        self._max_finished = config.keep_results
        self.result_ttl = config.result_ttl
        self.max_queue = config.max_queue
        self.job_timeout = config.job_timeout
        self._job_seconds: float | None = None  # moving average of recent run times
        self._jobs: dict[str, Job] = {}
        self._finished_order: deque[str] = deque()
        self._lock = threading.Lock()

    job_class = Job

    @property
    def queue_length(self) -> int:
        """Jobs waiting to run (running ones not counted)."""
        with self._lock:
            return self._queued()

    def _queued(self) -> int:
        return sum(job.state == "queued" for job in self._jobs.values())

    @property
    def finished_count(self) -> int:
        """Finished jobs still kept (with their images)."""
        with self._lock:
            self._drop_expired()
            return len(self._finished_order)

    def _new_job(self, request: EngineRequest, received: RequestClock | None, job_id: str | None = None) -> Job:
        """A job for `request` (its seed chosen), queued once _add admits it."""
        request = request.with_seed()
        job = self.job_class(
            id=job_id or secrets.token_hex(16), request=request, parameters=self.engine.parameters(request),
            clock=JobClock(received or RequestClock()),
        )
        job.total = request.steps
        return job

    def _add(self, job: Job, waiting: int) -> None:
        """Admit a new job behind `waiting` others (with the lock held); QueueFull when they are too many."""
        if waiting >= self.max_queue:
            raise QueueFull(
                f"the queue is full ({self.max_queue} jobs waiting, the server's --max-queue); try again later",
                self._retry_after(),
            )
        self._jobs[job.id] = job
        self._set_state(job, "queued")

    def _retry_after(self) -> int:
        """Seconds until a place in the queue is likely to free: the soonest end of a running job."""
        now = time.monotonic()
        estimates = [self._time_left(job, now) for job in self._jobs.values() if job.state == "running"]
        estimate = min(estimates, default=self._job_seconds or _DEFAULT_JOB_SECONDS)
        return max(1, min(math.ceil(estimate), 3600))

    def _time_left(self, job: Job, now: float) -> float:
        elapsed = now - (job.started or now)
        if job.step > 0 and job.total > job.step:
            estimate = elapsed * (job.total - job.step) / job.step
        else:
            estimate = max((self._job_seconds or _DEFAULT_JOB_SECONDS) - elapsed, 1.0)
        if job.deadline is not None:
            estimate = min(estimate, job.deadline - now)
        return estimate

    def _record_run_time(self, seconds: float) -> None:
        with self._lock:
            self._job_seconds = seconds if self._job_seconds is None else 0.7 * self._job_seconds + 0.3 * seconds

    def get(self, job_id: str) -> Job:
        with self._lock:
            return self._job(job_id)

    def _job(self, job_id: str) -> Job:
        """The job (with the lock held); UnknownJob if there is none, or no more."""
        self._drop_expired()
        if job_id not in self._jobs:
            raise UnknownJob(job_id)
        return self._jobs[job_id]

    def unknown_message(self, job_id: str) -> str:
        return (
            f"no job {job_id}: unknown, or its results expired (finished jobs are kept "
            f"{self.result_ttl:g} s, the newest {self._max_finished})"
        )

    def status(self, job_id: str) -> dict:
        job = self.get(job_id)
        with self._lock:
            return job.status()

    def _cancellable(self, job_id: str) -> Job:
        """The job, marked to stop (with the lock held); JobFinished if it has ended."""
        job = self._job(job_id)
        if job.finished:
            raise JobFinished(f"job {job_id} already finished ({job.state})")
        job.cancel_requested = True
        return job

    def _set_state(self, job: Job, state: str) -> None:
        job.state = state
        job.events.append(("state", job.status()))

    def _finish(self, job: Job, state: str, error: str | None = None) -> None:
        job.error = error
        job.finished_at = _now()
        job.clock.finished = time.perf_counter()
        job.expires = time.monotonic() + self.result_ttl
        job.request = None  # the decoded input images are not needed any more
        self._set_state(job, state)
        self._finished_order.append(job.id)
        while len(self._finished_order) > self._max_finished:
            self._jobs.pop(self._finished_order.popleft(), None)
        self._drop_expired()

    def _drop_expired(self) -> None:
        """Drop finished jobs past their time; they finished in order, so the oldest are first."""
        now = time.monotonic()
        while self._finished_order:
            job = self._jobs.get(self._finished_order[0])
            if job is not None and job.expires is not None and job.expires > now:
                break
            self._finished_order.popleft()
            if job is not None:
                self._jobs.pop(job.id, None)


class JobQueue(JobTable):
    """FIFO jobs for one engine, run by one worker thread.

    A running job is stopped after `config.job_timeout` seconds (None: no limit). The job taken runs
    with the waiting jobs whose engine.batch_key is its own, in queue order, up to `max_batch` images
    in all (config.max_batch_on the engine's device).
    """

    parallel_jobs = 1  # one worker: one job (or batch) at a time

    def __init__(self, engine: GenerationEngine, config: ServerConfig):
        super().__init__(engine, config)
        self.max_batch = config.max_batch_on(engine.device)
        self.png_compression = config.png_compression
        self.jobs_ran = 0
        self._waiting: deque[Job] = deque()  # queued jobs in order; a cancelled one leaves at once
        self._job_waiting = threading.Condition(self._lock)
        self._worker = threading.Thread(target=self._work, name="sd-blender-worker", daemon=True)

    def start(self) -> None:
        self._worker.start()

    def loaded_models(self) -> tuple[frozenset[str], frozenset]:
        """The base models and the ControlNets' keys on the device."""
        loaded = self.engine.loaded
        return frozenset([loaded.base_model] if loaded.base_model else []), loaded.controlnets

    def health(self) -> dict:
        """GET /health: the device, what is loaded (and how often it was), the jobs waiting and kept."""
        engine = self.engine
        catalog, loaded = engine.catalog, engine.loaded
        return {
            "status": "ok",
            "device": engine.device,
            "dtype": engine.dtype,
            "acceleration": engine.acceleration,
            "model": loaded.base_model or catalog.default_model.name,
            "loaded": {
                "base_model": loaded.base_model is not None,
                "controlnets": [
                    entry.control_type for key, entry in catalog.controlnet_entries() if key in loaded.controlnets
                ],
            },
            "load_counts": {"base_model": loaded.base_model_loads, "controlnets": dict(loaded.controlnet_loads)},
            "queue_length": self.queue_length,
            "finished_jobs": self.finished_count,
            "jobs_ran": self.jobs_ran,
        }

    def submit(self, request: EngineRequest, received: RequestClock | None = None, job_id: str | None = None) -> Job:
        """Queue an ordinary job, a synchronized texture job or a frame job; QueueFull when the queue is.
        `received`: the clock of the HTTP request that brought it (its timings start there); `job_id`:
        the id it is known by (a new one unless given)."""
        job = self._new_job(request, received, job_id)
        with self._lock:
            self._add(job, len(self._waiting))
            self._waiting.append(job)
            job.clock.request.on_answer = self._wake_worker
            self._job_waiting.notify()
        return job

    def _wake_worker(self) -> None:
        with self._lock:
            self._job_waiting.notify()

    def _first_job_ready(self) -> bool:
        """A job waits, and the first one's submission has been answered: a job starts only then, so
        that on a small CPU generating does not slow down the 202 (and the next submission)."""
        return bool(self._waiting) and not self._waiting[0].clock.request.answer_pending

    def cancel(self, job_id: str) -> dict:
        """A queued job is cancelled now, a running one at its next step."""
        with self._lock:
            job = self._cancellable(job_id)
            if job.state == "queued":
                self._waiting.remove(job)
                self._finish(job, "cancelled")
            return job.status()

    def _work(self) -> None:
        expiry_check_seconds = min(max(self.result_ttl, 1.0), 60.0)
        while True:
            with self._lock:
                if not self._job_waiting.wait_for(self._first_job_ready, timeout=expiry_check_seconds):
                    self._drop_expired()
                    continue
                batch = self._take_batch()
                started_at, started, clock_started = _now(), time.monotonic(), time.perf_counter()
                images = sum(image_count(job.request) for job in batch)
                self.jobs_ran += len(batch)
                for job in batch:
                    job.started_at, job.started = started_at, started
                    job.clock.started = clock_started
                    if self.job_timeout is not None:
                        job.deadline = started + self.job_timeout
                    job.batch = {"jobs": len(batch), "images": images}
                    self._set_state(job, "running")
            self._run(batch)
            self._record_run_time(time.monotonic() - started)

    def _take_batch(self) -> list[Job]:
        """The first waiting job, and the waiting jobs after it that can share its pipeline call, while
        their images fit in max_batch; the others keep their places."""
        first = self._waiting.popleft()
        batch, images = [first], image_count(first.request)
        key = self.engine.batch_key(first.request) if self.max_batch > images else None
        if key is None:
            return batch
        for job in list(self._waiting):
            count = image_count(job.request)
            if images + count <= self.max_batch and self.engine.batch_key(job.request) == key:
                self._waiting.remove(job)
                batch.append(job)
                images += count
        return batch

    def _timed_out(self, job: Job) -> bool:
        return job.deadline is not None and time.monotonic() > job.deadline

    def _stopping(self, job: Job) -> bool:
        return job.cancel_requested or self._timed_out(job)

    def _stop(self, job: Job) -> None:
        """Finish a job asked to stop: cancelled, or failed past its time limit."""
        if job.cancel_requested:
            self._finish(job, "cancelled")
            return
        log.warning("job %s stopped after the time limit of %g s", job.id, self.job_timeout)
        self._finish(
            job,
            "failed",
            f"stopped after {job.step} of {job.total} steps: the job ran past this server's "
            f"time limit of {self.job_timeout:g} s (--job-timeout)",
        )

    def _on_step(self, batch: list[Job], step: int, total: int) -> None:
        """Progress for each job of the batch; one asked to stop finishes now, the others go on (the
        engine stops the batch once every job is stopping)."""
        with self._lock:
            for job in batch:
                if job.finished:
                    continue
                if self._stopping(job):
                    self._stop(job)
                    continue
                job.step, job.total = step, total
                job.events.append(("progress", {"step": step, "total": total}))

    def _on_preview(self, job: Job, step: int, total: int, image: Image.Image) -> None:
        preview = Preview(step, total, image.width, image.height, encode_preview(image, self.png_compression))
        with self._lock:
            if job.finished:
                return
            job.preview = preview
            job.events.append(("preview", {"step": step}))

    def _run(self, batch: list[Job]) -> None:
        """Run a batch (one job, or ordinary jobs of one batch key) and finish each of its jobs not
        finished yet: all fail together, or each is done with its own images and parameters."""
        on_step = functools.partial(self._on_step, batch)

        def should_cancel() -> bool:
            return all(map(self._stopping, batch))

        on_previews = [functools.partial(self._on_preview, job) for job in batch]
        try:
            if len(batch) == 1:
                results = [self.engine.generate(batch[0].request, on_step, should_cancel, on_preview=on_previews[0])]
            else:
                requests = [job.request for job in batch]
                results = self.engine.generate_batch(requests, on_step, should_cancel, on_previews)
            generated = time.perf_counter()
            for job in batch:
                job.clock.generated = generated
            images = [self._encoded(job, result) for job, result in zip(batch, results)]
        except JobCancelled:
            with self._lock:
                for job in self._unfinished(batch):
                    self._stop(job)
        except EngineError as error:
            log.error("jobs %s failed: %s", _ids(batch), error)
            self._fail(batch, str(error))
        except Exception as error:  # a bug: the jobs fail, the worker goes on
            log.exception("jobs %s failed", _ids(batch))
            self._fail(batch, f"{type(error).__name__}: {error}")
        else:
            with self._lock:
                for job, result, pngs in zip(batch, results, images):
                    if job.finished:
                        continue
                    job.images = pngs
                    job.parameters = result.parameters  # what ran, e.g. with the checkpoint's model hash
                    self._finish(job, "done")

    def _encoded(self, job: Job, result: GenerationResult) -> list[bytes]:
        """The result's PNGs with their metadata, their encoding time on the job's clock."""
        start = time.perf_counter()
        pngs = [
            encode_png(image, result.parameters, index, self.png_compression) for index, image in enumerate(result.images)
        ]
        job.clock.encoding = time.perf_counter() - start
        return pngs

    def _fail(self, batch: list[Job], message: str) -> None:
        with self._lock:
            for job in self._unfinished(batch):
                self._finish(job, "failed", message)

    @staticmethod
    def _unfinished(batch: list[Job]) -> list[Job]:
        return [job for job in batch if not job.finished]


def _ids(batch: list[Job]) -> str:
    return ", ".join(job.id for job in batch)
