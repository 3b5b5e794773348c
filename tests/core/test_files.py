"""Files written whole or not at all (sd_blender/core/files.py), with real child processes killed
mid-write and real file-size limits, and the PNG check that tells a whole frame from a cut-off one."""
import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np

from conftest import REPO_ROOT
from sd_blender.core.files import clear_leftovers, write_whole
from sd_blender.core.png import encode_png, is_whole_png

STALL_WRITES = REPO_ROOT / "tests" / "stall_writes"
WRITE_WHOLE = """
import sys
sys.path.insert(0, sys.argv[1])
from sd_blender.core.files import write_whole
write_whole(sys.argv[2], b"new " * 100_000)
"""


def write_in_child(path, **popen):
    return subprocess.Popen([sys.executable, "-c", WRITE_WHOLE, str(REPO_ROOT), str(path)],
                            stderr=subprocess.PIPE, text=True, **popen)


def wait_for_file(path, process):
    while not path.exists():
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.02)


def test_a_write_killed_midway_leaves_the_old_file_and_a_leftover_that_is_cleared(tmp_path):
    target = tmp_path / "result.png"
    target.write_bytes(b"old result")
    signal_file = tmp_path / "stalled"
    env = {**os.environ, "PYTHONPATH": str(STALL_WRITES), "SD_BLENDER_STALL_WRITES": "result.png",
           "SD_BLENDER_STALL_SIGNAL": str(signal_file)}
    writer = write_in_child(target, env=env)
    wait_for_file(signal_file, writer)  # half the bytes are on disk, the writer is stalled
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    signal_file.unlink()
    (leftover,) = [path for path in tmp_path.iterdir() if path != target]
    assert leftover.name.startswith(".result.png.") and leftover.name.endswith(".part")
    assert leftover.stat().st_size == 200_000  # the half written before the kill
    assert target.read_bytes() == b"old result"

    assert clear_leftovers(tmp_path) == [leftover.name]
    assert list(tmp_path.iterdir()) == [target]


def test_a_write_that_hits_a_file_size_limit_fails_and_leaves_nothing(tmp_path):
    target = tmp_path / "result.png"
    target.write_bytes(b"old result")

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))

    writer = write_in_child(target, preexec_fn=limit_file_size)
    assert writer.wait() == 1
    assert "File too large" in writer.stderr.read()
    assert list(tmp_path.iterdir()) == [target] and target.read_bytes() == b"old result"


def test_only_leftovers_of_writers_that_are_gone_are_cleared(tmp_path):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = [tmp_path / f".frame_0001.png.{int(ended.stdout)}-0a1b2c3d.part",
            tmp_path / f".shot.blend.{int(ended.stdout)}-0a1b2c3d.part@"]  # Blender's own temporary name
    writing = tmp_path / f".frame_0002.png.{os.getpid()}-0a1b2c3d.part"  # this process is alive
    unrelated = [tmp_path / ".hidden.part", tmp_path / "frame_0003.png", tmp_path / "notes.txt"]
    for path in [*gone, writing, *unrelated]:
        path.write_bytes(b"x")
    assert sorted(clear_leftovers(tmp_path)) == sorted(path.name for path in gone)
    assert sorted(tmp_path.iterdir()) == sorted([writing, *unrelated])
    assert clear_leftovers(tmp_path / "missing") == []


def test_write_whole_replaces_the_file(tmp_path):
    target = tmp_path / "a.json"
    write_whole(str(target), b"one")
    write_whole(str(target), b"two")
    assert target.read_bytes() == b"two" and list(tmp_path.iterdir()) == [target]


def test_a_png_is_whole_only_up_to_its_last_byte(tmp_path):
    data = encode_png(np.arange(64 * 48 * 3, dtype=np.uint8).reshape(48, 64, 3))
    path = tmp_path / "frame.png"
    path.write_bytes(data)
    assert is_whole_png(path)
    for length in (0, 1, 8, 20, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:length])
        assert not is_whole_png(path), length
    path.write_bytes(b"not a png, but long enough to be one" * 3)
    assert not is_whole_png(path)
    assert not is_whole_png(tmp_path / "missing.png")

