"""The temporal report, its numbers recomputed from synthetic frames whose motion is known."""
import json

import numpy as np
import pytest

from sd_blender.core.frames_report import (
    AXIS_COLOUR, CONTROL_COLOUR, GENERATED_COLOUR, build_report, pair_errors, plot_report, report_from_files,
    report_summary, write_frames_report,
)
from sd_blender.core.png import read_png, write_png
from sd_blender.core.warp import write_motion

HEIGHT, WIDTH, SHIFT = 24, 32, 2  # the scene pans: frame N shows at x what frame N−1 showed at x + SHIFT
GENERATED_OFFSETS = {1: 10, 2: 13, 3: 8, 4: 8}
CONTROL_OFFSETS = {1: 0, 2: 1, 3: 1, 4: 3}


def panned(base, frame, offset):
    """Frame `frame` of a pan over base, brightened by offset."""
    return base[:, SHIFT * frame:SHIFT * frame + WIDTH] + np.uint8(offset)


def write_frames(folder, frames, appearing_block=None):
    """Generated RGB and control gray frames panning over random images, with their motion and
    occlusion files; returns the four path dictionaries. A block of frame 3 (rows, columns) can
    show something new that stays: occluded in frame 3, seen in frame 4."""
    rng = np.random.default_rng(0)
    colour = rng.integers(20, 200, (HEIGHT, WIDTH + SHIFT * 10, 3), dtype=np.uint8)
    gray = rng.integers(20, 200, (HEIGHT, WIDTH + SHIFT * 10), dtype=np.uint8)
    changed = colour.copy()
    if appearing_block is not None:
        rows, columns = appearing_block
        in_base = rows, slice(columns.start + SHIFT * 3, columns.stop + SHIFT * 3)
        changed[in_base] = 255 - changed[in_base]
    paths = {"generated": {}, "motions": {}, "occlusions": {}, "controls": {}}
    for frame in frames:
        generated = panned(changed if frame >= 3 else colour, frame, GENERATED_OFFSETS[frame])
        occlusion = np.zeros((HEIGHT, WIDTH), np.uint8)
        if appearing_block is not None and frame == 3:
            occlusion[appearing_block] = 255
        control = panned(gray, frame, CONTROL_OFFSETS[frame])
        for kind, name, pixels in (("generated", "frame", generated), ("controls", "control", control),
                                   ("occlusions", "occlusion", occlusion)):
            paths[kind][frame] = folder / f"{name}_{frame:04d}.png"
            write_png(paths[kind][frame], pixels)
        paths["motions"][frame] = folder / f"motion_{frame:04d}.exr"
        write_motion(paths["motions"][frame], np.broadcast_to(np.float32([SHIFT, 0]), (HEIGHT, WIDTH, 2)))
    return paths


def test_errors_are_the_offset_changes_over_the_compared_pixels(tmp_path):
    block = (slice(4, 14), slice(5, 15))
    report = report_from_files(**write_frames(tmp_path, [1, 2, 3, 4], block), temporal="full", seed=7)
    assert report["frames"] == [1, 4] and report["temporal"] == "full" and report["seed"] == 7
    assert [(pair["frame"], pair["previous"]) for pair in report["pairs"]] == [(2, 1), (3, 2), (4, 3)]
    inside = (WIDTH - SHIFT) / WIDTH  # the last SHIFT columns sample outside frame N−1
    for pair in report["pairs"]:
        frame = pair["frame"]
        assert pair["warping_error"] == pytest.approx(abs(GENERATED_OFFSETS[frame] - GENERATED_OFFSETS[frame - 1]))
        assert pair["control_warping_error"] == pytest.approx(abs(CONTROL_OFFSETS[frame] - CONTROL_OFFSETS[frame - 1]))
        occluded = 100 if frame == 3 else 0  # the block lies wholly inside the compared columns
        assert pair["compared"] == pytest.approx((inside * HEIGHT * WIDTH - occluded) / (HEIGHT * WIDTH), abs=1e-4)
    assert report["mean_warping_error"] == pytest.approx((3 + 5 + 0) / 3, abs=1e-4)
    assert report["mean_control_warping_error"] == pytest.approx((1 + 0 + 2) / 3, abs=1e-4)


def test_occluded_pixels_would_count_without_the_mask():
    rng = np.random.default_rng(1)
    previous = rng.integers(0, 200, (8, 8, 3), dtype=np.uint8)
    current = previous.copy()
    current[:2] = 255 - current[:2]
    occluded = np.zeros((8, 8), bool)
    occluded[:2] = True
    still = np.zeros((8, 8, 2), np.float32)
    masked = pair_errors(5, current, previous, previous, previous, still, occluded)
    unmasked = pair_errors(5, current, previous, previous, previous, still, np.zeros((8, 8), bool))
    assert masked["warping_error"] == 0 and masked["compared"] == 0.75
    assert unmasked["warping_error"] == pytest.approx(np.abs(current.astype(int) - previous).mean(), abs=1e-4)


def test_only_consecutive_frames_are_paired(tmp_path):
    paths = write_frames(tmp_path, [1, 2, 4])
    del paths["motions"][1], paths["occlusions"][1]  # the first frame has no motion to be read
    report = report_from_files(**paths)
    assert [pair["frame"] for pair in report["pairs"]] == [2] and report["frames"] == [1, 4]


def test_one_frame_gives_no_pairs_and_null_means(tmp_path):
    paths = write_frames(tmp_path, [3])
    report = report_from_files(**paths, temporal="full")
    assert report["pairs"] == [] and report["frames"] == [3, 3]
    assert report["mean_warping_error"] is None and report["mean_control_warping_error"] is None
    json_path, png_path = write_frames_report(tmp_path, report)
    assert json.loads(open(json_path).read())["mean_warping_error"] is None
    assert read_png(png_path).shape == (360, 800, 3)
    assert "no warping error" in " ".join(report_summary(report))


def test_a_frame_of_another_size_names_the_frame(tmp_path):
    paths = write_frames(tmp_path, [1, 2])
    write_png(paths["generated"][2], np.zeros((HEIGHT, WIDTH + 1, 3), np.uint8))
    with pytest.raises(ValueError, match="frame 2"):
        report_from_files(**paths)


def steady_report(generated, control, frames=range(1, 21)):
    pairs = [{"frame": frame, "previous": frame - 1, "warping_error": generated(frame),
              "control_warping_error": control, "compared": 0.9} for frame in frames]
    return build_report(pairs, [frames[0] - 1, frames[-1]], temporal="full")


def pixels_of(image, colour):
    return np.argwhere((image == colour).all(axis=-1))  # (row, column) pairs


def test_written_files_hold_the_report_and_its_plot(tmp_path):
    report = steady_report(lambda frame: 4.0 + frame % 3, 1.25)
    json_path, png_path = write_frames_report(tmp_path, report)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["frames_report.json", "frames_report.png"]
    stored = json.loads(open(json_path).read())
    assert stored == report
    assert set(stored) >= {"frames", "temporal", "pairs", "mean_warping_error", "mean_control_warping_error"}
    assert set(stored["pairs"][0]) == {"frame", "previous", "warping_error", "control_warping_error", "compared"}
    assert stored["mean_warping_error"] == pytest.approx(np.mean([4.0 + frame % 3 for frame in range(1, 21)]), abs=1e-4)
    image = read_png(png_path)
    assert image.shape == (360, 800, 3)
    assert len(pixels_of(image, GENERATED_COLOUR)) > 500 and len(pixels_of(image, CONTROL_COLOUR)) > 500


def test_plot_has_the_requested_size():
    assert plot_report(steady_report(lambda frame: 2.0, 1.0), width=640, height=300).shape == (300, 640, 3)


def test_curves_stand_at_their_values_above_the_frame_axis():
    image = plot_report(steady_report(lambda frame: 10.0, 5.0))
    axis_row = np.argmax((image == AXIS_COLOUR).all(axis=-1).sum(axis=1))  # the longest dark row
    generated_row = np.median(pixels_of(image, GENERATED_COLOUR)[:, 0])  # the curve outweighs the legend
    control_row = np.median(pixels_of(image, CONTROL_COLOUR)[:, 0])
    assert generated_row < control_row < axis_row
    assert axis_row - generated_row == pytest.approx(2 * (axis_row - control_row), abs=3)


def test_a_rising_error_rises_left_to_right():
    image = plot_report(steady_report(lambda frame: float(frame), 0.5))
    red = pixels_of(image, GENERATED_COLOUR)
    red = red[red[:, 0] > 60]  # below the title and legend
    left = red[red[:, 1] < 300][:, 0].mean()
    right = red[red[:, 1] > 500][:, 0].mean()
    assert right < left - 50


def test_summary_names_the_means_and_the_worst_pair():
    report = steady_report(lambda frame: 9.5 if frame == 7 else 2.0, 0.5)
    text = "\n".join(report_summary(report))
    assert f"{report['mean_warping_error']:.2f}" in text and "0.50" in text
    assert "frame 7 from 6, 9.50" in text
