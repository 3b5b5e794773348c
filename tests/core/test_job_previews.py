"""Live previews: while a job runs, its worker thread fetches the server's latest preview whenever
the job's status announces a newer one, and publishes it in the snapshot. A preview that cannot
be fetched never fails the job. Against a scripted stand-in server whose job moves on only when
the test says so."""
import contextlib
import json
import threading

import numpy as np
import pytest

from sd_blender.core.client import ServerClient
from sd_blender.core.job import DONE, GenerationJob
from sd_blender.core.png import encode_png
from stand_in_server import send, stand_in
from waiting import wait_for

RESULT = encode_png(np.zeros((8, 8, 3), np.uint8))


def preview_png(step):
    """A small preview whose pixels say which step it shows."""
    return encode_png(np.full((6, 4, 3), step * 10, np.uint8))


def running(step, preview_step=None):
    return {"state": "running", "progress": {"step": step, "total": 9}, "images": [], "preview_step": preview_step}


DONE_STATUS = {"state": "done", "progress": {"step": 9, "total": 9}, "images": ["/v1/jobs/j1/images/0"],
               "parameters": {"seeds": [1]}, "preview_step": 9}


class ScriptedJob:
    """A server holding one job, j1, whose status is statuses[position]: the test moves it on with
    advance(). Its preview answers come from preview_answer(step) → (status, headers, body, cut_after)."""

    def __init__(self, statuses, preview_answer):
        self.statuses = statuses
        self.preview_answer = preview_answer
        self.position = 0
        self.preview_requests = []
        self._lock = threading.Lock()

    def advance(self):
        with self._lock:
            self.position += 1

    def status(self):
        with self._lock:
            return self.statuses[self.position]

    def respond(self, handler):
        handler.request_body()
        if handler.command == "POST":
            send(handler, 200, [("Content-Type", "application/json")], b'{"id": "j1"}')
        elif handler.path == "/v1/jobs/j1":
            send(handler, 200, [("Content-Type", "application/json")], json.dumps(self.status()).encode())
        elif handler.path == "/v1/jobs/j1/preview":
            step = self.status()["preview_step"]
            self.preview_requests.append(step)
            status, headers, body, cut_after = self.preview_answer(step)
            send(handler, status, headers, body, cut_after)
        else:
            send(handler, 200, [("Content-Type", "image/png")], RESULT)


def served_preview(step):
    return 200, [("Content-Type", "image/png"), ("X-Preview-Step", str(step)), ("X-Preview-Total", "9")], \
        preview_png(step), None


@pytest.fixture
def follow(tmp_path):
    """Runs a job against a ScriptedJob; yields start(scripted) → the running GenerationJob."""
    with contextlib.ExitStack() as stack:
        def start(scripted):
            url = stack.enter_context(stand_in(scripted.respond))
            return GenerationJob(ServerClient(url), {"prompt": "p"}, str(tmp_path), "shot", poll_interval=0.02).start()

        yield start


def test_the_snapshot_carries_the_latest_preview(follow):
    scripted = ScriptedJob([running(1), running(3, 3), running(5, 3), running(6, 6), DONE_STATUS], served_preview)
    job = follow(scripted)
    wait_for(lambda: job.snapshot().step == 1, "the job running")
    assert job.snapshot().preview is None  # none announced yet
    for expected in (3, 3, 6):
        scripted.advance()
        wait_for(lambda: job.snapshot().step == scripted.status()["progress"]["step"], "the next status")
        wait_for(lambda: job.snapshot().preview is not None and job.snapshot().preview.step == expected, "the preview")
        preview = job.snapshot().preview
        assert preview.png == preview_png(expected)
        assert preview.pixels.shape == (6, 4, 3) and (preview.pixels == expected * 10).all()
    scripted.advance()
    snapshot = job.wait(timeout=60)
    assert snapshot.state == DONE, snapshot.message
    assert snapshot.preview.step == 6  # the last one fetched while the job ran stays
    assert scripted.preview_requests == [3, 6]  # each preview fetched once


def test_the_client_reads_a_preview_and_its_step_or_none_yet():
    answers = {0: (204, [], b"", None)}
    scripted = ScriptedJob([running(1, 0), running(3, 3)], lambda step: answers.get(step) or served_preview(step))
    with stand_in(scripted.respond) as url:
        client = ServerClient(url)
        assert client.preview("j1") is None
        scripted.advance()
        assert client.preview("j1") == (preview_png(3), 3)


def _failing(status, body=b'{"detail": "preview gone"}', cut_after=None, content_type="application/json"):
    return lambda step: served_preview(step) if step == 3 else (status, [("Content-Type", content_type),
                                                                          ("X-Preview-Step", str(step))], body, cut_after)


@pytest.mark.parametrize("answer", [
    _failing(500),
    _failing(200, preview_png(6), cut_after=20, content_type="image/png"),  # cut off mid-body
    _failing(200, b"not a png", content_type="image/png"),
    _failing(204, b""),  # announced, then gone
], ids=["server error", "cut off", "not a PNG", "no preview"])
def test_a_preview_that_cannot_be_fetched_keeps_the_last_and_never_fails_the_job(follow, answer):
    scripted = ScriptedJob([running(3, 3), running(6, 6), DONE_STATUS], answer)
    job = follow(scripted)
    wait_for(lambda: job.snapshot().preview is not None, "the first preview")
    scripted.advance()
    wait_for(lambda: scripted.preview_requests.count(6) >= 2, "the failing preview asked for again")
    assert job.snapshot().preview.step == 3 and not job.snapshot().finished
    scripted.advance()
    snapshot = job.wait(timeout=60)
    assert snapshot.state == DONE, snapshot.message
    assert snapshot.preview.step == 3
