"""The frame batch of the pure core, driving real child processes (small Python programs that
behave as the command line's `generate --frames` does: write frame files and previews, print, exit)."""
import os
import sys

import numpy as np

from conftest import REPO_ROOT
from sd_blender.core import frame_batch
from sd_blender.core.frame_batch import CANCELLED, DONE, FAILED, FrameBatch
from waiting import wait_for

WRITES_FIRST_FRAME_THEN_FAILS = """
import pathlib, sys
pathlib.Path(sys.argv[1]).write_bytes(b"frame 1")
print("frame 2:", flush=True)
print("sd_blender: frame 2: cannot reach the sd_blender server", flush=True)
print("stopped at frame 2", flush=True)
sys.exit(1)
"""

# Both programs below stop as the command line does when the batch is cancelled (its --cancel-on-stdin).
LISTENS_FOR_CANCEL = """
import signal, sys
sys.path.insert(0, sys.argv[1])
from sd_blender.core.frame_batch import listen_for_cancel
signal.signal(signal.SIGINT, signal.default_int_handler)
listen_for_cancel(sys.stdin)
"""

WORKS_UNTIL_INTERRUPTED = LISTENS_FOR_CANCEL + """
import time
try:
    while True:
        print("  step 1 of 20", flush=True)
        time.sleep(0.05)
except KeyboardInterrupt:
    print("stopped", flush=True)
    sys.exit(1)
"""

# Writes two previews of frame 1 as `generate --previews` does, then stalls halfway through a third
# (tests/stall_writes) until it is interrupted.
WRITES_PREVIEWS_THEN_STALLS = LISTENS_FOR_CANCEL + """
import numpy as np
from sd_blender.core.job import Preview
from sd_blender.core.png import encode_png
from sd_blender.core.preview_files import write_preview
for step in (3, 6, 9):
    pixels = np.full((6, 4, 3), step * 10, np.uint8)
    write_preview(sys.argv[2], "shot_Scene_0001", Preview(step, encode_png(pixels), pixels))
"""


def python(program, *arguments):
    return [sys.executable, "-c", program, *arguments]


def test_frames_written_are_counted_and_the_first_error_line_says_why_it_stopped(tmp_path, monkeypatch):
    paths = [tmp_path / f"shot_000{frame}.png" for frame in (1, 2, 3)]
    batch = FrameBatch(python(WRITES_FIRST_FRAME_THEN_FAILS, str(paths[0])), paths).start()
    snapshot = batch.wait(60)
    assert (snapshot.state, snapshot.frames_done, snapshot.frame_count) == (FAILED, 1, 3)
    assert snapshot.message == ("frame 2: cannot reach the sd_blender server; 1 of 3 frames done and kept; "
                                "generating the frames again goes on from there")
    monkeypatch.setattr(frame_batch.os.path, "exists", looked_at_a_file)
    assert batch.snapshot() == snapshot  # the caller's (Blender's UI) thread looks at no file


def looked_at_a_file(path):
    raise AssertionError(f"the calling thread looked at {path}")


def test_a_finished_batch_says_where_the_frames_are(tmp_path):
    paths = [tmp_path / "shot_0001.png"]
    paths[0].write_bytes(b"done before")
    snapshot = FrameBatch(python("print('frame 1: done already')"), paths).start().wait(60)
    assert (snapshot.state, snapshot.fraction) == (DONE, 1.0)
    assert snapshot.message == f"done: 1 frame(s) in {tmp_path}"
    assert snapshot.preview is None  # no previews folder


def test_cancel_interrupts_the_process_as_ctrl_c_does(tmp_path, monkeypatch):
    monkeypatch.setattr(frame_batch, "CANCEL_GRACE_SECONDS", 24 * 3600.0)  # interrupted, not terminated
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    batch = FrameBatch(python(WORKS_UNTIL_INTERRUPTED, str(REPO_ROOT)), paths).start()
    wait_for(lambda: "step 1 of 20" in batch.snapshot().message, "the process working")
    assert batch.snapshot().message == "frame 1 of 2: step 1 of 20"
    batch.cancel()
    snapshot = batch.wait(30)
    assert snapshot.state == CANCELLED
    assert snapshot.message == "cancelled: 0 of 2 frames done and kept; generating the frames again goes on from there"


def test_the_newest_whole_preview_is_read_back_the_older_removed_and_all_go_with_the_temporary_folder(
        tmp_path, monkeypatch):
    monkeypatch.setattr(frame_batch, "CANCEL_GRACE_SECONDS", 24 * 3600.0)  # a stalled write is interrupted too
    temporary, stalled = tmp_path / "batch", tmp_path / "stalled"
    previews = temporary / "previews"
    previews.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "tests" / "stall_writes"),
           "SD_BLENDER_STALL_WRITES": "preview_shot_Scene_0001_9", "SD_BLENDER_STALL_SIGNAL": str(stalled)}
    batch = FrameBatch(python(WRITES_PREVIEWS_THEN_STALLS, str(REPO_ROOT), str(previews)), [tmp_path / "a.png"],
                       env=env, temporary_folder=temporary, previews=previews).start()
    wait_for(lambda: stalled.exists() or batch.finished, "the third preview half-written")
    assert any(name.endswith(".part") for name in os.listdir(previews)), batch.snapshot().message

    # Step 6, not the third one, half there (the batch's thread reads the folder: waited on).
    wait_for(lambda: getattr(batch.snapshot().preview, "step", None) == 6, "the preview of step 6 read")
    preview = batch.snapshot().preview
    assert np.array_equal(preview.pixels, np.full((6, 4, 3), 60, np.uint8))
    assert batch.snapshot().preview is preview  # read once: the timer shows it once
    wait_for(lambda: "preview_shot_Scene_0001_3.png" not in os.listdir(previews), "the preview read past removed")
    batch.cancel()
    snapshot = batch.wait(30)
    assert snapshot.state == CANCELLED and not temporary.exists()
    assert snapshot.preview is preview  # the last one read stays


def test_the_preview_written_just_before_the_process_ends_is_read_before_its_folder_goes(tmp_path, monkeypatch):
    monkeypatch.setattr(frame_batch, "FILES_POLL_SECONDS", 600.0)  # no read while it runs: only the last one
    temporary = tmp_path / "batch"
    previews = temporary / "previews"
    previews.mkdir(parents=True)
    batch = FrameBatch(python(WRITES_PREVIEWS_THEN_STALLS, str(REPO_ROOT), str(previews)), [tmp_path / "a.png"],
                       temporary_folder=temporary, previews=previews).start()  # no stall: 3, 6, 9, exit
    snapshot = batch.wait(60)
    assert snapshot.finished and not temporary.exists()
    assert snapshot.preview.step == 9 and np.array_equal(snapshot.preview.pixels, np.full((6, 4, 3), 90, np.uint8))
    monkeypatch.setattr(frame_batch.PreviewFolder, "newest", looked_at_a_file)
    assert batch.snapshot() == snapshot  # the caller's thread reads no preview
