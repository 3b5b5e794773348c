"""One generation on the server, run in a worker thread, observed from Blender's UI thread.

The thread submits the job, polls its progress, downloads the results and writes them to disk.
The UI thread only ever reads `snapshot()` (a lock and a copy) and calls `cancel()`. While the job
runs, the thread also fetches the server's latest preview whenever there is a newer one.
"""
import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from .client import ServerError
from .files import clear_leftovers, write_whole
from .png import decode_png

SUBMITTING = "submitting"
QUEUED = "queued"
RUNNING = "running"
DOWNLOADING = "downloading"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"
FINISHED_STATES = (DONE, FAILED, CANCELLED)
_SERVER_FINISHED_STATES = ("done", "failed", "cancelled")


@dataclass(frozen=True)
class Preview:
    """The server's look at a running job's image at `step`: its PNG and its pixels, decoded in the
    job's thread ((H, W) or (H, W, C) uint8, top row first)."""

    step: int
    png: bytes
    pixels: np.ndarray


@dataclass(frozen=True)
class JobSnapshot:
    state: str = SUBMITTING
    step: int = 0
    total: int = 0
    message: str = ""
    job_id: str | None = None
    result_paths: tuple[str, ...] = ()
    parameters: dict | None = None
    preview: Preview | None = None  # the latest preview fetched

    @property
    def finished(self):
        return self.state in FINISHED_STATES

    @property
    def fraction(self):
        return self.step / self.total if self.total else 0.0


def unique_path(directory, stem, suffix=".png"):
    """A path in directory that does not exist yet: results never overwrite earlier ones."""
    candidate = os.path.join(directory, stem + suffix)
    counter = 1
    while os.path.exists(candidate):
        candidate = os.path.join(directory, f"{stem}_{counter}{suffix}")
        counter += 1
    return candidate


# How long a job waits for a server that stopped answering (a restart, a network blip)
# before it gives up and tells the user.
RECONNECT_GRACE_SECONDS = 20.0
QUEUE_FULL_RETRY_SECONDS = 5  # when a full server (429) does not say when to come back
PANEL_RETRY = "press Generate"  # how the user runs a job again, for the messages of a lost job


class GenerationJob:
    def __init__(self, client, job_request, output_dir, file_stem, poll_interval=0.25,
                 reconnect_grace=None, seed_in_name=True, how_to_retry=PANEL_RETRY, route="/v1/jobs",
                 result_paths=None):
        """Results are written to result_paths (one per image, in order) when given, else named
        <file_stem>_<seed> (<file_stem> without seed_in_name) in output_dir, never overwriting."""
        self._reconnect_grace = RECONNECT_GRACE_SECONDS if reconnect_grace is None else reconnect_grace
        self._how_to_retry = how_to_retry
        self._client = client
        self._request = job_request
        self._route = route
        self._output_dir = output_dir
        self.file_stem = file_stem  # what the job's files are named after
        self._seed_in_name = seed_in_name
        self._result_paths = result_paths
        self._poll_interval = poll_interval
        self._lock = threading.Lock()
        self._snapshot = JobSnapshot()
        self._cancel_requested = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sd_blender generation", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def cancel(self):
        self._cancel_requested.set()

    def snapshot(self):
        with self._lock:
            return self._snapshot

    def wait(self, timeout=None):
        self._thread.join(timeout)
        return self.snapshot()

    def _update(self, **changes):
        with self._lock:
            self._snapshot = JobSnapshot(**{**self._snapshot.__dict__, **changes})

    def _run(self):
        try:
            job_id = self._submit()
            if job_id is None:
                self._update(state=CANCELLED, message="cancelled")
            else:
                self._follow(job_id)
        except ServerError as error:
            self._update(state=FAILED, message=str(error))
        except OSError as error:
            self._update(state=FAILED, message=f"could not write the result: {error}")
        except Exception as error:  # noqa: BLE001  a job always ends with a message, never a silent hang
            self._update(state=FAILED, message=f"the job stopped on an unexpected error: {error!r}")

    def _submit(self):
        """The job's id on the server; a full queue (429) is waited out as the server's Retry-After
        says, until it takes the job. None when cancelled meanwhile."""
        while True:
            try:
                return self._client.submit(self._request, self._route)
            except ServerError as error:
                if error.status != 429:
                    raise
                wait = error.retry_after or QUEUE_FULL_RETRY_SECONDS
                self._update(message=f"the server's queue is full; trying again in {wait} s")
                if self._cancel_requested.wait(wait):
                    return None

    def _follow(self, job_id):
        self._update(state=QUEUED, job_id=job_id, message="queued on the server")
        cancel_sent = False
        while True:
            if self._cancel_requested.is_set() and not cancel_sent:
                self._client.cancel(job_id)
                cancel_sent = True
            status = self._ask(self._client.job, job_id)
            if status["state"] in _SERVER_FINISHED_STATES:
                break
            progress = status.get("progress") or {}
            step, total = progress.get("step", 0), progress.get("total", 0)
            self._update(state=status["state"], step=step, total=total,
                         message=f"step {step} of {total}" if status["state"] == RUNNING else "queued on the server")
            if self._newer_preview(status):
                self._fetch_preview(job_id)
            time.sleep(self._poll_interval)
        if status["state"] == "done":
            self._update(step=status["progress"]["total"], total=status["progress"]["total"],
                         parameters=status.get("parameters"))
            self._download(status)
        elif status["state"] == "cancelled":
            self._update(state=CANCELLED, message="cancelled")
        else:
            self._update(state=FAILED, message=f"the server could not generate: {status.get('error')}")

    def _newer_preview(self, status):
        """Whether the status announces a preview other than the one fetched last."""
        latest, fetched = status.get("preview_step"), self.snapshot().preview
        return latest is not None and (fetched is None or fetched.step != latest)

    def _fetch_preview(self, job_id):
        """The job's latest preview into the snapshot. Previews are a nicety: one that cannot be
        fetched or read leaves the last one in place, and the next poll tries again."""
        try:
            answer = self._client.preview(job_id)
            if answer is not None:
                png, step = answer
                self._update(preview=Preview(step, png, decode_png(png, f"the preview at step {step}")))
        except (ServerError, ValueError):
            pass

    def _ask(self, call, *arguments):
        """call(*arguments) once the job is on the server; a server that stops answering, or whose
        answers are cut off, is asked again for up to the grace time."""
        lost_since = None
        while True:
            try:
                return call(*arguments)
            except ServerError as error:
                if error.status == 404:
                    raise ServerError(
                        "the server no longer knows this job: it was restarted, or the result expired. "
                        f"To generate it again, {self._how_to_retry}."
                    ) from None
                if not error.transient:
                    raise
                lost_since = lost_since or time.monotonic()
                waited = time.monotonic() - lost_since
                if waited >= self._reconnect_grace:
                    raise ServerError(
                        f"lost the sd_blender server at {self._client.base_url} during the job "
                        f"(no whole answer for {waited:.0f} s; last: {error}). Start it again, then {self._how_to_retry}."
                    ) from None
                self._update(message=f"the server is not answering; retrying ({waited:.0f} s)")
                time.sleep(self._poll_interval)

    def _download(self, status):
        self._update(state=DOWNLOADING, message="downloading the result")
        os.makedirs(self._output_dir, exist_ok=True)
        clear_leftovers(self._output_dir)
        seeds = (status.get("parameters") or {}).get("seeds") or []
        paths = []
        for index, url in enumerate(status["images"]):
            seed = seeds[index] if index < len(seeds) else index
            data = self._ask(self._client.download, url)
            path = self._result_path(index, seed)
            write_whole(path, data)
            paths.append(path)
        self._update(state=DONE, result_paths=tuple(paths),
                     message=f"done: {len(paths)} image(s) in {self._output_dir}")

    def _result_path(self, index, seed):
        if self._result_paths:
            return self._result_paths[index]
        return unique_path(self._output_dir, f"{self.file_stem}_{seed}" if self._seed_in_name else self.file_stem)
