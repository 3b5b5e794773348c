"""Frame batches of the command line (`generate --frames`, which Generate Frames runs too) under
faults, with real processes: the command line killed with kill -9 between frames and in the middle
of writing a frame, the server killed mid-job, an answer cut off before its body, a full disk (a
file-size limit). After each, the same command run again exits 0 with every frame whole, the
frames written before the fault unchanged, and nothing else in the folder."""
import json
import os
import resource
import signal
import subprocess
import sys
import threading
from urllib.parse import urlparse

import pytest
from PIL import Image

from conftest import REPO_ROOT
from live_server import JOB_AHEAD, running_server
from sd_blender.core.client import ServerClient
from stand_in_server import cutting_off, stand_in
from waiting import wait_for

SEED = 5
STALL_WRITES = REPO_ROOT / "tests" / "stall_writes"


@pytest.fixture
def shot(saved_scene, tmp_path):
    return tmp_path / "shot.blend"


def frames_command(shot, out, server_url, frames):
    return [sys.executable, "-m", "sd_blender", "generate", str(shot), "--controls", "none", "--steps", "2",
            "--seed", str(SEED), "--out", str(out), "--server", server_url, "--frames", frames]


def run_frames(shot, out, server_url, frames, **options):
    return subprocess.run(frames_command(shot, out, server_url, frames), cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=600, **options)


def start_frames(shot, out, server_url, frames, env=None):
    return subprocess.Popen(frames_command(shot, out, server_url, frames), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})


def frame_name(frame):
    return f"shot_Scene_{frame:04d}.png"


REPORT = ("frames_report.json", "frames_report.png")  # rewritten by every run that ends


def written(out):
    """{name: (bytes, modification time)} of every file in the folder but the temporal report (the
    pass files are in the folder passes/)."""
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in out.iterdir()
            if path.is_file() and path.name not in REPORT}


def assert_rerun_completes(shot, out, server_url, kept):
    """The same command for frames 1-3 exits 0; the frames in `kept` are as they were, and the
    folder holds exactly the three frames, each whole: decodable, the right size, its metadata inside,
    and the temporal report."""
    rerun = run_frames(shot, out, server_url, "1-3")
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    for name in kept:
        assert f"done already, kept {out / name}" in rerun.stdout
    after = written(out)
    assert sorted(after) == [frame_name(frame) for frame in (1, 2, 3)]
    assert all((out / name).is_file() for name in REPORT)
    assert {name: after[name] for name in kept} == kept
    for name in after:
        with Image.open(out / name) as png:
            png.load()
            assert png.size == (96, 64)
            assert json.loads(png.text["sd_blender"])["seed"] == SEED
    return rerun


def first_frame_done(shot, out, server_url):
    first = run_frames(shot, out, server_url, "1-1")
    assert first.returncode == 0, first.stderr[-3000:]
    return written(out)


def kill(process):
    process.send_signal(signal.SIGKILL)
    process.wait()


class OutputLines:
    """Collects a process's output lines in a thread, so a test can wait for one."""

    def __init__(self, process):
        self.lines = []
        threading.Thread(target=self._collect, args=(process,), daemon=True).start()

    def _collect(self, process):
        for line in process.stdout:
            self.lines.append(line)

    def after(self, marker):
        text = "".join(self.lines)
        return text[text.find(marker):] if marker in text else ""


def test_a_batch_killed_between_frames_goes_on_where_it_stopped(shot, tmp_path, server):
    out = tmp_path / "frames"
    batch = start_frames(shot, out, server, "1-3")
    wait_for(lambda: (out / frame_name(1)).exists() or batch.poll() is not None, "frame 1 written")
    kill(batch)
    kept = {name: value for name, value in written(out).items() if not name.startswith(".")}
    assert frame_name(1) in kept
    assert_rerun_completes(shot, out, server, kept)


def test_a_batch_killed_while_writing_a_frame_writes_that_frame_again(shot, tmp_path, server):
    out = tmp_path / "frames"
    kept = first_frame_done(shot, out, server)
    stalled = tmp_path / "stalled"
    batch = start_frames(shot, out, server, "1-3", env={
        "PYTHONPATH": os.pathsep.join([str(STALL_WRITES), os.environ.get("PYTHONPATH", "")]),
        "SD_BLENDER_STALL_WRITES": frame_name(2), "SD_BLENDER_STALL_SIGNAL": str(stalled),
    })
    wait_for(lambda: stalled.exists() or batch.poll() is not None, "frame 2 half written")
    assert batch.poll() is None, batch.stdout.read()
    kill(batch)
    (leftover,) = [name for name in written(out) if name not in kept]
    assert leftover.startswith(f".{frame_name(2)}.") and leftover.endswith(".part")  # never under the frame's name

    rerun = assert_rerun_completes(shot, out, server, kept)
    assert f"removed {leftover}, left half-written when an earlier run stopped" in rerun.stdout


def test_a_frame_cut_off_by_an_older_version_is_generated_again(shot, tmp_path, server):
    out = tmp_path / "frames"
    kept = first_frame_done(shot, out, server)
    whole = (out / frame_name(1)).read_bytes()
    (out / frame_name(2)).write_bytes(whole[: len(whole) // 2])  # what a crash left before writes were whole
    rerun = assert_rerun_completes(shot, out, server, kept)
    assert f"frame 2: {out / frame_name(2)} was cut off (an earlier run stopped while writing it)" in rerun.stdout


def test_a_server_killed_mid_job_stops_the_batch_at_that_frame(shot, tmp_path, tmp_path_factory):
    out = tmp_path / "frames"
    cache = tmp_path_factory.mktemp("server_cache")
    with running_server(cache_dir=cache) as doomed:  # killed below
        kept = first_frame_done(shot, out, doomed.url)
        # Holds frame 2 queued until the server is killed (the longest job the server takes).
        ServerClient(doomed.url).submit(JOB_AHEAD)
        batch = start_frames(shot, out, doomed.url, "1-3")
        output = OutputLines(batch)
        wait_for(lambda: "queued on the server" in output.after("frame 2:") or batch.poll() is not None, "frame 2 queued")
        kill(doomed.process)
    with running_server(cache_dir=cache, port=urlparse(doomed.url).port) as restarted:
        assert batch.wait(timeout=600) == 1, "".join(output.lines)[-3000:]
        text = "".join(output.lines)
        assert ("frame 2: the server no longer knows this job: it was restarted, or the result expired. "
                "To generate it again, run the command again." in text
                or f"frame 2: lost the sd_blender server at {doomed.url} during the job" in text), text[-3000:]
        assert "stopped at frame 2; the frames before it are kept: run the same command again" in text
        assert written(out) == kept
        assert_rerun_completes(shot, out, restarted.url, kept)


def test_an_answer_cut_off_before_its_body_stops_the_batch(shot, tmp_path, server):
    out = tmp_path / "frames"
    kept = first_frame_done(shot, out, server)
    with stand_in(cutting_off(server, lambda method, path: method == "POST")) as proxy:
        stopped = run_frames(shot, out, proxy, "1-3")
    assert stopped.returncode == 1
    assert "sd_blender: frame 2: the server's answer was cut off after " in stopped.stderr
    assert "stopped at frame 2; the frames before it are kept" in stopped.stderr
    assert written(out) == kept
    assert_rerun_completes(shot, out, server, kept)


def test_a_full_disk_stops_the_batch_and_leaves_no_partial_frame(shot, tmp_path, server):
    out = tmp_path / "frames"
    kept = first_frame_done(shot, out, server)
    frame_size = min(len(data) for data, _ in kept.values())

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (frame_size // 2, resource.RLIM_INFINITY))

    stopped = run_frames(shot, out, server, "1-3", preexec_fn=small_disk)
    assert stopped.returncode == 1, stopped.stdout[-3000:]
    assert "sd_blender: frame 2: could not write " in stopped.stderr and "[Errno 27] File too large" in stopped.stderr
    assert "stopped at frame 2; the frames before it are kept" in stopped.stderr
    assert written(out) == kept
    assert_rerun_completes(shot, out, server, kept)
