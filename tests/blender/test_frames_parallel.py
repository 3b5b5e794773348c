"""`generate --frames` against a server that runs two jobs at once (the tiny model on Ray Serve with
two replicas: GET /v1/limits says parallel_jobs 2), through a proxy that logs what the command line
sends: frames (and anchor chunks) that do not depend on each other go to the server side by side, each
once; frames that start from the frame before still go one at a time. The single-process server (one
job at a time) is test_frames.py's, test_temporal.py's and test_frame_faults.py's."""
import json
import os
import subprocess
import sys
import threading
import urllib.request

import pytest

from conftest import REPO_ROOT
from live_server import running_ray_server
from stand_in_server import forward, send, stand_in

SUBMISSION_ROUTES = ("/v1/jobs", "/v1/frame-jobs")
# Longer than the command line takes to render a frame's passes, shorter than its 30 s wait for an answer.
HOLD_SECONDS = 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Replaces conftest's for this file: two replicas on a local Ray instance of its own."""
    with running_ray_server(2, "--device", "cpu", cache_dir=tmp_path_factory.mktemp("server_cache")) as live:
        yield live.url


class LoggingProxy:
    """Forwards every request to the server, logging its (method, path) as it comes. With hold_first,
    the first submission waits for a second one (at most HOLD_SECONDS), so that both reach the server
    together; `paired` says whether the second came while the first was held."""

    def __init__(self, upstream, hold_first=False):
        self.upstream, self.hold_first = upstream, hold_first
        self.log = []
        self.paired = False
        self._lock = threading.Lock()
        self._second = threading.Event()

    def __call__(self, handler):
        with self._lock:
            self.log.append((handler.command, handler.path))
            count = len(self.submissions())
        if self.hold_first and is_submission(handler.command, handler.path):
            self._hold(count)
        send(handler, *forward(self.upstream, handler))

    def _hold(self, count):
        if count == 1:
            self.paired = self._second.wait(HOLD_SECONDS)
        elif count == 2:
            self._second.set()

    def submissions(self):
        return [path for method, path in self.log if is_submission(method, path)]


def is_submission(method, path):
    return method == "POST" and path in SUBMISSION_ROUTES


def generate_frames(shot, out, proxy, frames, *options):
    with stand_in(proxy) as url:
        completed = subprocess.run(
            [sys.executable, "-m", "sd_blender", "generate", str(shot), "--frames", frames, "--steps", "2",
             "--seed", "11", "--out", str(out), "--server", url, *options],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
        )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed.stdout.splitlines()


def frame_paths(out, frames):
    return [str(out / f"shot_Scene_{frame:04d}.png") for frame in frames]


def replicas_health(server):
    with urllib.request.urlopen(server + "/health", timeout=30) as answer:
        return json.load(answer)["replicas"]


def test_independent_frames_run_on_both_replicas_each_once(saved_scene, tmp_path, server):
    out = tmp_path / "frames"
    proxy = LoggingProxy(server, hold_first=True)
    lines = generate_frames(tmp_path / "shot.blend", out, proxy, "1-12", "--temporal", "off")
    assert proxy.paired  # the second frame was sent before the first one's job had even reached the server
    assert len(proxy.submissions()) == 12  # one job a frame: none sent twice
    paths = frame_paths(out, range(1, 13))
    assert all(os.path.isfile(path) and lines.count(path) == 1 for path in paths), lines
    assert sorted(name for name in os.listdir(out) if name.endswith(".png")) == sorted(
        [os.path.basename(path) for path in paths] + ["frames_report.png"])
    replicas = replicas_health(server)
    assert len(replicas) == 2 and all(replica["jobs_ran"] > 0 for replica in replicas), replicas


def test_anchor_chunks_go_together(saved_scene, tmp_path, server):
    out = tmp_path / "frames"
    proxy = LoggingProxy(server, hold_first=True)
    lines = generate_frames(tmp_path / "shot.blend", out, proxy, "1-8", "--temporal", "anchor", "--anchor-every", "4")
    assert proxy.paired
    assert proxy.submissions() == ["/v1/frame-jobs", "/v1/frame-jobs"]  # frames 1-4 and 5-8, each with its anchor
    assert all(lines.count(path) == 1 for path in frame_paths(out, range(1, 9))), lines


def test_frames_that_start_from_the_frame_before_go_one_at_a_time(saved_scene, tmp_path, server):
    proxy = LoggingProxy(server)
    generate_frames(tmp_path / "shot.blend", tmp_path / "frames", proxy, "1-3", "--temporal", "warp")
    events = ["submit" if is_submission(method, path) else "download" for method, path in proxy.log
              if is_submission(method, path) or path.endswith(".png")]
    # Each job (an inpainting or a repaint) is sent once the one before it was downloaded.
    assert len(events) >= 6 and events == ["submit", "download"] * (len(events) // 2), events
