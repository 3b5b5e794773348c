"""The temporal modes of `generate --frames` (which Generate Frames runs) against the live tiny-model
server, seen from the server's side through a recording proxy: what each job carries (the frame
before, warped by the motion pass; the hole to inpaint; the anchor), resuming after a kill, and the
temporal report recomputed from the files."""
import base64
import io
import json
import os
import signal
import subprocess
import sys

import bpy
import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT
from motion_scenes import HEIGHT, WIDTH, motion_shot
from sd_blender.core.exr import read_exr
from stand_in_server import recording, stand_in
from waiting import wait_for

SEED = 3


@pytest.fixture
def shot(addon, tmp_path):
    """The motion test shot over frames 1-3 (the cube goes on moving), a depth unit, 4 steps."""
    scene = motion_shot(bpy.context.scene)
    cube = scene.objects["Cube"]
    cube.location = (-1.6, -1.0, 0.0)
    cube.keyframe_insert("location", frame=3)
    scene.frame_start, scene.frame_end = 1, 3
    settings = scene.sd_blender
    settings.prompt = "a glowing cube and a bent column in front of a striped wall"
    settings.steps = 4
    settings.control_units.add().kind = "depth"
    path = tmp_path / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    return path


@pytest.fixture
def proxy(server):
    """A recording proxy in front of the live server: yields (its URL, the requests it saw)."""
    requests = []
    with stand_in(recording(server, requests)) as url:
        yield url, requests


def command(shot, out, url, mode, *options):
    return [sys.executable, "-m", "sd_blender", "generate", str(shot), "--frames", "1-3", "--seed", str(SEED),
            "--temporal", mode, "--out", str(out), "--server", url, *options]


def run(shot, out, url, mode, *options):
    completed = subprocess.run(command(shot, out, url, mode, *options), cwd=REPO_ROOT, capture_output=True,
                               text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed


def posted(requests, route):
    return [json.loads(body) for method, path, body in requests if method == "POST" and path == route]


def image(field):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(field))))


def frame_file(out, frame):
    return out / f"shot_Scene_{frame:04d}.png"


def read(path):
    return np.asarray(Image.open(path))


def motion_of(out, frame):
    channels = read_exr(out / "passes" / f"motion_{frame:04d}.exr")
    occluded = read(out / "passes" / f"occlusion_{frame:04d}.png") >= 128
    return np.stack([channels["X"], channels["Y"]], axis=-1), occluded


def warped(previous, motion):
    """previous sampled bilinearly at (x + X, y + Y) (the test's own warp), and where that is inside."""
    height, width = previous.shape[:2]
    rows, columns = np.mgrid[0:height, 0:width]
    x, y = columns + motion[..., 0], rows + motion[..., 1]
    inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
    x, y = np.clip(x, 0, width - 1), np.clip(y, 0, height - 1)
    left, top = np.minimum(np.floor(x).astype(int), width - 2), np.minimum(np.floor(y).astype(int), height - 2)
    fx, fy = (x - left)[..., None], (y - top)[..., None]
    image = previous.astype(np.float64)
    if image.ndim == 2:
        fx, fy = fx[..., 0], fy[..., 0]
    upper = image[top, left] * (1 - fx) + image[top, left + 1] * fx
    lower = image[top + 1, left] * (1 - fx) + image[top + 1, left + 1] * fx
    return upper * (1 - fy) + lower * fy, inside


def assert_warped_from(job, previous, motion, occluded):
    """An inpainting job of frame N: the frame before warped where it was seen, the hole white."""
    start, mask = image(job["init_image"]), image(job["mask_image"])
    assert start.shape == (HEIGHT, WIDTH, 3) and mask.shape == (HEIGHT, WIDTH) and job["strength"] == 1.0
    expected, inside = warped(previous, motion)
    hole = mask == 255
    assert hole[occluded | ~inside].all()  # whatever frame N−1 did not show is inpainted
    assert 0.01 < hole.mean() < 0.5
    kept = ~hole
    assert np.abs(start[kept] - expected[kept]).max() <= 1.0  # the rest is frame N−1, warped


def test_a_warp_batch_sends_the_frame_before_warped_and_resumes_after_a_kill(shot, proxy, tmp_path):
    url, requests = proxy
    out = tmp_path / "frames"
    process = subprocess.Popen(command(shot, out, url, "warp", "--warp-strength", "0.5"), cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Killed once frame 3's first job is on the server: frames 1 and 2 are written.
    wait_for(lambda: len(posted(requests, "/v1/jobs")) >= 4 or process.poll() is not None, "frame 3 submitted")
    process.send_signal(signal.SIGKILL)
    process.wait()
    first_run = posted(requests, "/v1/jobs")
    assert "init_image" not in first_run[0]  # frame 1 starts the shot from noise
    motion, occluded = motion_of(out, 2)
    assert_warped_from(first_run[1], read(frame_file(out, 1)), motion, occluded)
    repaint = first_run[2]
    assert repaint["strength"] == 0.5 and "mask_image" not in repaint
    assert (image(repaint["init_image"]) == read(out / "passes" / "inpainted_0002.png")).all()
    assert not frame_file(out, 3).exists()
    frame_2 = frame_file(out, 2).read_bytes()

    del requests[:]
    resumed = run(shot, out, url, "warp", "--warp-strength", "0.5")
    assert f"frame 2: done already, kept {frame_file(out, 2)}" in resumed.stdout
    assert frame_file(out, 2).read_bytes() == frame_2
    inpaint, repaint = posted(requests, "/v1/jobs")  # frame 3 only, from frame 2 as written
    motion, occluded = motion_of(out, 3)
    assert_warped_from(inpaint, read(frame_file(out, 2)), motion, occluded)
    assert all(frame_file(out, frame).exists() for frame in (1, 2, 3))


def test_the_report_says_how_far_each_frame_is_from_the_one_before_warped(shot, server, tmp_path):
    out = tmp_path / "frames"
    completed = run(shot, out, server, "off")
    report = json.loads((out / "frames_report.json").read_text())
    assert str(out / "frames_report.json") in completed.stdout and "Mean warping error" in completed.stdout
    assert report["frames"] == [1, 3] and report["temporal"] == "off" and report["control"] == "depth"
    assert [pair["frame"] for pair in report["pairs"]] == [2, 3]
    errors, floors = [], []
    for pair in report["pairs"]:
        frame = pair["frame"]
        motion, occluded = motion_of(out, frame)
        for name, values in (("shot_Scene_{:04d}.png", errors), ("passes/depth_{:04d}.png", floors)):
            current, previous = read(out / name.format(frame)), read(out / name.format(frame - 1))
            moved, inside = warped(previous, motion)
            compared = inside & ~occluded
            values.append(np.abs(current.astype(np.float64) - moved)[compared].mean())
        assert pair["compared"] == pytest.approx(compared.mean(), abs=1e-4)
    assert [pair["warping_error"] for pair in report["pairs"]] == pytest.approx(errors, abs=1e-3)
    assert [pair["control_warping_error"] for pair in report["pairs"]] == pytest.approx(floors, abs=1e-3)
    assert report["mean_warping_error"] == pytest.approx(np.mean(errors), abs=1e-3)
    assert Image.open(out / "frames_report.png").size == (800, 360)
    assert os.path.getsize(out / "frames_report.png") > 1000


def test_anchor_sends_the_frames_in_chunks_with_the_first_frame_as_anchor(shot, proxy, tmp_path):
    url, requests = proxy
    out = tmp_path / "frames"
    run(shot, out, url, "anchor", "--anchor-every", "2")
    assert not posted(requests, "/v1/jobs")
    chunks = posted(requests, "/v1/frame-jobs")
    assert [len(chunk["frames"]) for chunk in chunks] == [2, 1]  # keyframes 1 and 3
    depth = {frame: read(out / "passes" / f"depth_{frame:04d}.png") for frame in (1, 2, 3)}
    for chunk, anchor, frames in zip(chunks, (1, 3), ([1, 2], [3])):
        assert chunk["seed"] == SEED and [control["type"] for control in chunk["controls"]] == ["depth"]
        (anchor_depth,) = chunk["anchor"]["control_images"]
        assert (image(anchor_depth) == depth[anchor]).all()
        for frame, inputs in zip(frames, chunk["frames"]):
            assert (image(inputs["control_images"][0]) == depth[frame]).all() and "init_image" not in inputs
    assert all(frame_file(out, frame).exists() for frame in (1, 2, 3))

    frame_file(out, 2).unlink()  # as if the batch had stopped there: the same command makes frame 2 alone
    del requests[:]
    run(shot, out, url, "anchor", "--anchor-every", "2")
    (chunk,) = posted(requests, "/v1/frame-jobs")
    assert len(chunk["frames"]) == 1 and (image(chunk["frames"][0]["control_images"][0]) == depth[2]).all()
    assert (image(chunk["anchor"]["control_images"][0]) == depth[1]).all()


def test_full_warps_each_frame_and_anchors_it_to_the_first_one_as_generated(shot, proxy, tmp_path):
    url, requests = proxy
    out = tmp_path / "frames"
    run(shot, out, url, "full", "--match-colors")
    (first,) = posted(requests, "/v1/jobs")
    assert "init_image" not in first
    jobs = posted(requests, "/v1/frame-jobs")
    assert len(jobs) == 4  # frames 2 and 3: inpainting, then repainting
    frame_1 = read(frame_file(out, 1))
    for job in jobs:
        assert (image(job["anchor"]["init_image"]) == frame_1).all()
        assert (image(job["anchor"]["control_images"][0]) == read(out / "passes" / "depth_0001.png")).all()
    motion, occluded = motion_of(out, 3)
    inpaint = dict(jobs[2]["frames"][0], strength=jobs[2]["strength"])
    assert_warped_from(inpaint, read(frame_file(out, 2)), motion, occluded)
    assert jobs[3]["strength"] == 0.5 and "mask_image" not in jobs[3]["frames"][0]
    # --match-colors: the repaint starts from the inpainted frame with frame 1's colour statistics.
    start, inpainted = image(jobs[3]["frames"][0]["init_image"]), read(out / "passes" / "inpainted_0003.png")
    assert np.allclose(start.mean(axis=(0, 1)), frame_1.mean(axis=(0, 1)), atol=1.0)
    assert np.allclose(start.std(axis=(0, 1)), frame_1.std(axis=(0, 1)), atol=1.5)
    assert np.corrcoef(start[..., 0].ravel(), inpainted[..., 0].ravel())[0, 1] > 0.95


def test_an_anchor_batch_without_a_server_stops_with_the_reason(shot, tmp_path):
    out = tmp_path / "frames"
    stopped = subprocess.run(command(shot, out, "http://127.0.0.1:9", "anchor"), cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=600)
    assert stopped.returncode == 1
    assert "sd_blender: frame 1: cannot reach the sd_blender server at http://127.0.0.1:9" in stopped.stderr
    assert "stopped at frame 1; the frames before it are kept" in stopped.stderr


def test_temporal_options_out_of_range_are_usage_errors(shot, tmp_path):
    for option, message in ((["--warp-strength", "2"], "expected a strength from 0.05 to 1, got '2'"),
                            (["--anchor-every", "-1"], "expected 0 (the first frame anchors all) or a whole number"),
                            (["--temporal", "smooth"], "invalid choice: 'smooth'")):
        completed = subprocess.run([sys.executable, "-m", "sd_blender", "generate", str(shot), "--frames", "1-3", *option],
                                   cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert completed.returncode == 2 and message in completed.stderr, completed.stderr[-2000:]
