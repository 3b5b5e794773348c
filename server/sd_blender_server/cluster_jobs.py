"""The jobs of a Ray Serve ingress (ray_app.py): each job runs on a replica, which streams its
events, status, latest preview and images back; the ingress keeps a copy of every job, so the
routes of api.py read, stream and cancel any replica's job as they do this process's own. No Ray
here: the ingress hands in the function that opens a job's stream.

A job counts as queued until its replica starts it (waiting in Serve's router, or behind the
replica's running batch), so the queue bound and Retry-After hold for the whole cluster; the job
time limit is kept by the replica running the job. A job whose replica stops fails if it had
started there, and is sent again if not.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import ServerConfig
from .frame_request import FrameRequest
from .jobs import TERMINAL_STATES, Job, JobTable, Preview
from .texture_request import TextureRequest
from .timings import RequestClock

if TYPE_CHECKING:
    from .engine import EngineRequest, GenerationEngine

log = logging.getLogger(__name__)


# How many times a job is sent again when the replica it was sent to stops before starting it.
_RESENDS = 3
# (job id, request with its seed, RequestClock.ages(), base model name) -> the job's updates from
# its replica (ray_app.Generator.run), an async iterator whose cancel() stops the job there.
OpenStream = Callable[[str, "EngineRequest", tuple, str], AsyncIterator[dict]]


@dataclass
class RemoteJob(Job):
    """The ingress's copy of a job running on a replica: its status as the replica reports it, the
    timings the replica measured (queue, generation, encoding) over the ingress's own."""

    replica: str | None = None
    remote_timings: dict | None = None

    def status(self) -> dict:
        status = super().status()
        remote = {part: ms for part, ms in (self.remote_timings or {}).items() if ms is not None}
        status["timings"] = {**status["timings"], **remote}
        status["replica"] = self.replica
        return status


def base_model_name(request: EngineRequest, engine: GenerationEngine) -> str:
    """The base model a request of any kind runs on, by its catalog name: the key Serve's model
    multiplexing routes it by."""
    if isinstance(request, TextureRequest):
        request = request.settings
    elif isinstance(request, FrameRequest):
        request = request.frames[0]
    return engine.catalog.base_source(request.model).name


class ClusterJobs(JobTable):
    """Jobs run by `replicas` Ray Serve replicas, followed from this ingress's event loop."""

    job_class = RemoteJob

    def __init__(
        self, engine: GenerationEngine, config: ServerConfig, open_stream: OpenStream, replicas: int, max_batch: int
    ):
        super().__init__(engine, config)
        self.parallel_jobs = replicas
        self.max_batch = max_batch
        self._open_stream = open_stream
        self._loop = asyncio.get_running_loop()
        self._followers: dict[str, asyncio.Future] = {}
        self._replicas: dict[str, dict] = {}  # replica id -> its latest health snapshot

    def submit(self, request: EngineRequest, received: RequestClock | None = None) -> Job:
        """Queue a job for the cluster (from any thread); QueueFull when the cluster's queue is."""
        job = self._new_job(request, received)
        model = base_model_name(job.request, self.engine)
        with self._lock:
            self._add(job, self._queued())
            follower = asyncio.run_coroutine_threadsafe(self._follow(job, model, job.clock.request.ages()), self._loop)
            self._followers[job.id] = follower
        return job

    def cancel(self, job_id: str) -> dict:
        """Cancelled now, wherever the job is: its stream is cancelled, which stops it on its replica
        (at its next step when it runs)."""
        with self._lock:
            job = self._cancellable(job_id)
            self._finish(job, "cancelled")
            follower = self._followers.get(job_id)
            status = job.status()
        if follower is not None:
            follower.cancel()
        return status

    async def _follow(self, job: RemoteJob, model: str, ages: tuple) -> None:
        request, job.request = job.request, None  # the replica has it (the ingress keeps no copy)
        try:
            for sends_left in range(_RESENDS, -1, -1):
                stream = self._open_stream(job.id, request, ages, model)
                try:
                    async for update in stream:
                        with self._lock:
                            self._apply(job, update)
                    return
                except asyncio.CancelledError:
                    stream.cancel()
                    raise
                except Exception as error:  # the replica died, or could not be reached
                    if not (sends_left and self._resend(job, error)):
                        self._replica_lost(job, error)
                        return
        finally:
            with self._lock:
                self._followers.pop(job.id, None)
                if not job.finished:
                    self._finish(job, "failed", "the replica running this job ended its updates before the job ended")

    def _resend(self, job: RemoteJob, error: Exception) -> bool:
        """Whether a job its replica had not started yet when the replica was lost is sent again
        (the job cannot be what stopped it): to a live replica, a new one included."""
        with self._lock:
            if job.state != "queued":
                return False
            self._stopped(job.replica)
            log.warning("job %s sent again: replica %s stopped before starting it (%s)", job.id, job.replica,
                        type(error).__name__)
            job.replica = None
            return True

    def _replica_lost(self, job: RemoteJob, error: Exception) -> None:
        where = f"replica {job.replica}" if job.replica else "the Ray Serve replica it was sent to"
        log.error("job %s lost: %s: %s", job.id, type(error).__name__, error)
        with self._lock:
            self._stopped(job.replica)
            if not job.finished:
                self._finish(
                    job, "failed",
                    f"{where} stopped while it had this job ({type(error).__name__}); the other replicas go on: "
                    "submit the job again",
                )

    def _apply(self, job: RemoteJob, update: dict) -> None:
        """An update from the job's replica (with the lock held): its new events, preview, status and,
        at the end, images."""
        job.replica = update["replica"]
        if "health" in update:
            self._seen(update["health"])
        if job.finished:  # cancelled here: the replica stops at its next step
            return
        if update.get("preview") is not None:
            job.preview = update["preview"]
        for name, data in update["events"]:
            if name == "state":
                self._apply_state(job, data, update)
            else:
                if name == "progress":
                    job.step, job.total = data["step"], data["total"]
                job.events.append((name, data))

    def _apply_state(self, job: RemoteJob, status: dict, update: dict) -> None:
        state = status["state"]
        if state == "queued":
            return  # queued here already
        job.step, job.total = status["progress"]["step"], status["progress"]["total"]
        job.started_at, job.batch, job.parameters = status["started_at"], status["batch"], status["parameters"]
        job.remote_timings = status["timings"]
        if state == "running":
            job.started = time.monotonic()
            if self.job_timeout is not None:
                job.deadline = job.started + self.job_timeout
            self._set_state(job, "running")
        elif state in TERMINAL_STATES:
            job.images = update.get("images") or []
            self._finish(job, state, status["error"])

    def replica_seen(self, snapshot: dict) -> None:
        """A replica's health (it sends one as it starts, and as each of its jobs starts and ends)."""
        with self._lock:
            self._seen(snapshot)

    def _seen(self, snapshot: dict) -> None:
        self._replicas[snapshot["replica"]] = {**snapshot, "alive": True}

    def replica_stopped(self, replica: str) -> None:
        """A replica whose process ended: kept in /health's list, `alive: false`."""
        with self._lock:
            self._stopped(replica)

    def _stopped(self, replica: str | None) -> None:
        if replica in self._replicas:
            self._replicas[replica]["alive"] = False

    def loaded_models(self) -> tuple[frozenset[str], frozenset]:
        """The base models and ControlNets loaded on any live replica."""
        replicas = self._live_replicas()
        return (
            frozenset(replica["model"] for replica in replicas if replica["loaded"]["base_model"]),
            frozenset(key for replica in replicas for key in replica["loaded_controlnet_keys"]),
        )

    def _live_replicas(self) -> list[dict]:
        with self._lock:
            return [replica for replica in self._replicas.values() if replica["alive"]]

    def health(self) -> dict:
        """GET /health: the single server's answer summed over the live replicas, and each replica's own."""
        with self._lock:
            replicas = list(self._replicas.values())
        live = [replica for replica in replicas if replica["alive"]]
        first = live[0] if live else {}
        controlnet_loads = sum((Counter(replica["load_counts"]["controlnets"]) for replica in live), Counter())
        return {
            "status": "ok" if live else "starting",
            "device": first.get("device"),
            "dtype": first.get("dtype"),
            "acceleration": first.get("acceleration"),
            "model": first.get("model", self.engine.catalog.default_model.name),
            "loaded": {
                "base_model": any(replica["loaded"]["base_model"] for replica in live),
                "controlnets": sorted({kind for replica in live for kind in replica["loaded"]["controlnets"]}),
            },
            "load_counts": {
                "base_model": sum(replica["load_counts"]["base_model"] for replica in live),
                "controlnets": dict(controlnet_loads),
            },
            "queue_length": self.queue_length,
            "finished_jobs": self.finished_count,
            "jobs_ran": sum(replica["jobs_ran"] for replica in live),
            "replicas": replicas,
        }


def replica_update(
    job: Job, sent_events: int, sent_preview: Preview | None, replica: str, health: Callable[[], dict]
) -> dict:
    """What a replica streams about its job: the events after the first `sent_events`, its preview if
    newer than `sent_preview`, its images once done, the replica's id, and in the first and the last
    update the replica's health() (what the job loaded, the jobs it ran)."""
    update = {"events": job.events[sent_events:], "replica": replica, "preview": None}
    if job.preview is not sent_preview:
        update["preview"] = job.preview
    if job.finished:
        update["images"] = job.images
    if sent_events == 0 or job.finished:
        update["health"] = health()
    return update
