"""The temporal report of a generated frame range: how far each frame disagrees with the one
before it once that one is warped by the scene's motion, next to the same number for the control
images (the floor the scene itself sets: shading, disocclusion, resampling), as JSON and a plot."""
import json
import math
import os
from dataclasses import dataclass

import numpy as np

from .files import write_whole
from .png import read_png, write_png
from .warp import read_motion, warping_error

GENERATED_COLOUR = (214, 39, 40)
CONTROL_COLOUR = (31, 119, 180)
AXIS_COLOUR = (40, 40, 40)
GRID_COLOUR = (225, 225, 225)
REPORT_NAME = "frames_report"


def _rounded(value, digits=4):
    return None if value is None else round(value, digits)


def pair_errors(frame, generated, previous_generated, control, previous_control, motion, occluded):
    """One consecutive pair (frame − 1, frame): the warping errors of the generated frames and of
    the control images (None: no control image, no floor) by frame's motion ((H, W, 2)) outside
    its occlusion ((H, W) bool)."""
    warping, compared = warping_error(generated, previous_generated, motion, occluded)
    control_warping = None if control is None else warping_error(control, previous_control, motion, occluded)[0]
    return {"frame": frame, "previous": frame - 1, "warping_error": _rounded(warping),
            "control_warping_error": _rounded(control_warping), "compared": _rounded(compared)}


def _mean(values):
    known = [value for value in values if value is not None]
    return _rounded(sum(known) / len(known)) if known else None


def build_report(pairs, frames, **settings):
    """The report of a frame range (frames: [first, last]) from its pair_errors results: the
    settings given (temporal=..., ...), the mean errors over the pairs (None without any) and the
    pairs."""
    return {
        "frames": list(frames),
        **settings,
        "mean_warping_error": _mean(pair["warping_error"] for pair in pairs),
        "mean_control_warping_error": _mean(pair["control_warping_error"] for pair in pairs),
        "pairs": list(pairs),
    }


def read_occlusion(path):
    """The occlusion mask of an occlusion PNG: True where it is white (hidden in the frame before)."""
    image = read_png(path)
    return (image if image.ndim == 2 else image[..., 0]) >= 128


def report_from_files(generated, motions, occlusions, controls, **settings):
    """The report of a frame range from its files: generated and controls map each frame number
    to its PNG (controls may be None: no control image, no floor), motions and occlusions each
    frame that follows another to its motion EXR and occlusion PNG. Frames are read one at a
    time, keeping only the frame before."""
    frames = sorted(generated)
    if not frames:
        raise ValueError("a frames report needs at least one frame")
    pairs = []
    previous_frame = previous_generated = previous_control = None
    for frame in frames:
        generated_image = read_png(generated[frame])
        control_image = read_png(controls[frame]) if controls else None
        if previous_frame == frame - 1:
            if frame not in motions or frame not in occlusions:
                raise ValueError(f"frame {frame} follows frame {previous_frame} but has no motion or occlusion file")
            try:
                motion, occluded = read_motion(motions[frame]), read_occlusion(occlusions[frame])
                pairs.append(pair_errors(frame, generated_image, previous_generated,
                                         control_image, previous_control, motion, occluded))
            except ValueError as error:
                raise ValueError(f"frame {frame}: {error}") from error
        previous_frame, previous_generated, previous_control = frame, generated_image, control_image
    return build_report(pairs, [frames[0], frames[-1]], **settings)


def write_frames_report(folder, report):
    """Write frames_report.json and frames_report.png into folder, each whole; returns their paths."""
    json_path = os.path.join(folder, REPORT_NAME + ".json")
    png_path = os.path.join(folder, REPORT_NAME + ".png")
    write_whole(json_path, (json.dumps(report, indent=2) + "\n").encode())
    write_png(png_path, plot_report(report))
    return json_path, png_path


def report_note(folder):
    """"; mean warping error …" of the report in folder, for a one-line outcome; "" without one."""
    try:
        with open(os.path.join(folder, REPORT_NAME + ".json"), encoding="utf-8") as file:
            report = json.load(file)
    except (OSError, ValueError):
        return ""
    if report.get("mean_warping_error") is None:
        return ""
    return (f"; mean warping error {report['mean_warping_error']:.2f}, control images "
            f"{_text(report.get('mean_control_warping_error'))} ({REPORT_NAME}.png)")


def report_summary(report):
    """A few printable lines: the mean errors and the worst pair."""
    pairs = [pair for pair in report["pairs"] if pair["warping_error"] is not None]
    first, last = report["frames"]
    lines = [f"Frames {first}-{last}: {len(report['pairs'])} consecutive pairs compared"]
    if not pairs:
        return lines + ["No consecutive frames with pixels to compare: no warping error."]
    worst = max(pairs, key=lambda pair: pair["warping_error"])
    lines.append(f"Mean warping error {report['mean_warping_error']:.2f} (0-255), control images "
                 f"{_text(report['mean_control_warping_error'])} (the scene's own floor)")
    lines.append(f"Worst pair: frame {worst['frame']} from {worst['previous']}, {worst['warping_error']:.2f} "
                 f"(control {_text(worst['control_warping_error'])}), {worst['compared']:.0%} of pixels compared")
    return lines


def _text(value):
    return "n/a" if value is None else f"{value:.2f}"


# The plot ------------------------------------------------------------------------------------

# A 5×7 bitmap font: each glyph is seven rows, each row five bits, the leftmost pixel highest.
_FONT = {
    "0": (0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E), "1": (0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "2": (0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F), "3": (0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E),
    "4": (0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02), "5": (0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E),
    "6": (0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E), "7": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08),
    "8": (0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E), "9": (0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C),
    "A": (0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11), "B": (0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E),
    "C": (0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E), "D": (0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C),
    "E": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F), "F": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10),
    "G": (0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F), "H": (0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11),
    "I": (0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E), "J": (0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C),
    "K": (0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11), "L": (0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F),
    "M": (0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11), "N": (0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11),
    "O": (0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E), "P": (0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10),
    "Q": (0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D), "R": (0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11),
    "S": (0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E), "T": (0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04),
    "U": (0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E), "V": (0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04),
    "W": (0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A), "X": (0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11),
    "Y": (0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04), "Z": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F),
    ".": (0, 0, 0, 0, 0, 0x0C, 0x0C), "-": (0, 0, 0, 0x1F, 0, 0, 0), "/": (0, 0x01, 0x02, 0x04, 0x08, 0x10, 0),
    "(": (0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02), ")": (0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08),
    ":": (0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0), " ": (0, 0, 0, 0, 0, 0, 0),
}
_GLYPH_WIDTH, _GLYPH_HEIGHT = 5, 7
_SCALE = 2  # font pixels per glyph pixel
_ADVANCE = (_GLYPH_WIDTH + 1) * _SCALE
_TEXT_HEIGHT = _GLYPH_HEIGHT * _SCALE
_MARGINS = {"left": 70, "right": 24, "top": 62, "bottom": 56}


def _glyph(character):
    bits = np.array(_FONT[character], np.uint8)[:, None] >> np.arange(_GLYPH_WIDTH - 1, -1, -1) & 1
    return np.kron(bits, np.ones((_SCALE, _SCALE), np.uint8)).astype(bool)


def _text_width(text):
    return len(text) * _ADVANCE - _SCALE


def _paint(canvas, mask, left, top, colour):
    """Colour canvas where mask (placed with its top-left corner at (left, top)) is set, clipped."""
    top_clip, left_clip = max(top, 0), max(left, 0)
    bottom_clip = min(top + mask.shape[0], canvas.shape[0])
    right_clip = min(left + mask.shape[1], canvas.shape[1])
    if top_clip < bottom_clip and left_clip < right_clip:
        visible = mask[top_clip - top:bottom_clip - top, left_clip - left:right_clip - left]
        canvas[top_clip:bottom_clip, left_clip:right_clip][visible] = colour


def _draw_text(canvas, text, left, top, colour=AXIS_COLOUR):
    """Draw text (upper-cased) with its top-left corner at (left, top)."""
    gap = np.zeros((_TEXT_HEIGHT, _SCALE), bool)
    glyphs = [part for character in text.upper() for part in (_glyph(character), gap)]
    _paint(canvas, np.hstack(glyphs[:-1]), left, top, colour)


def _fill(canvas, left, top, right, bottom, colour):
    _paint(canvas, np.ones((max(bottom - top, 0), max(right - left, 0)), bool), left, top, colour)


def _draw_line(canvas, start, end, colour, thickness=2):
    """A straight line from start to end ((x, y) in pixels), thickness pixels wide."""
    (x0, y0), (x1, y1) = start, end
    steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    for x, y in zip(np.linspace(x0, x1, steps), np.linspace(y0, y1, steps)):
        left, top = int(round(x)) - thickness // 2, int(round(y)) - thickness // 2
        _fill(canvas, left, top, left + thickness, top + thickness, colour)


def _nice_step(span, count):
    """A step of 1, 2 or 5 times a power of ten giving about count ticks over span."""
    raw = span / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    return next(power * factor for factor in (1, 2, 5, 10) if power * factor >= raw)


def _value_label(value, step):
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:.{decimals}f}"


def _series(report):
    """(values by frame, colour, legend label) of each curve."""
    pairs = report["pairs"]
    return [
        ({pair["frame"]: pair["warping_error"] for pair in pairs}, GENERATED_COLOUR, "generated frames"),
        ({pair["frame"]: pair["control_warping_error"] for pair in pairs}, CONTROL_COLOUR,
         "control images (scene floor)"),
    ]


@dataclass
class _PlotArea:
    """Where the axes lie on the canvas and the frame and value ranges they span."""
    left: int
    top: int
    right: int
    bottom: int
    first: int
    last: int
    top_value: float

    def x_of(self, frame):
        return self.left + (frame - self.first) / (self.last - self.first) * (self.right - self.left)

    def y_of(self, value):
        return self.bottom - value / self.top_value * (self.bottom - self.top)


def _draw_legend(canvas, series):
    right, top = canvas.shape[1] - _MARGINS["right"], 36
    for _, colour, label in reversed(series):
        left = right - _text_width(label)
        _draw_text(canvas, label, left, top)
        _fill(canvas, left - 30, top + _TEXT_HEIGHT // 2 - 2, left - 8, top + _TEXT_HEIGHT // 2 + 2, colour)
        right = left - 50


def _draw_value_axis(canvas, area, step):
    for tick in range(round(area.top_value / step) + 1):
        y = int(round(area.y_of(tick * step)))
        _fill(canvas, area.left, y, area.right, y + 1, GRID_COLOUR)
        label = _value_label(tick * step, step)
        _draw_text(canvas, label, area.left - 8 - _text_width(label), y - _TEXT_HEIGHT // 2)
    _fill(canvas, area.left, area.top, area.left + 2, area.bottom + 1, AXIS_COLOUR)


def _draw_frame_axis(canvas, area):
    widest_label = _ADVANCE * 6
    step = max(1, int(_nice_step(area.last - area.first, (area.right - area.left) // widest_label)))
    for frame in range(math.ceil(area.first / step) * step, area.last + 1, step):
        x = int(round(area.x_of(frame)))
        _fill(canvas, x, area.bottom, x + 1, area.bottom + 6, AXIS_COLOUR)
        _draw_text(canvas, str(frame), x - _text_width(str(frame)) // 2, area.bottom + 10)
    _fill(canvas, area.left, area.bottom, area.right + 1, area.bottom + 2, AXIS_COLOUR)
    label_top = canvas.shape[0] - _TEXT_HEIGHT - 6
    _draw_text(canvas, "frame", (area.left + area.right - _text_width("frame")) // 2, label_top)


def _draw_curve(canvas, area, values, colour):
    """Lines between the known values of consecutive frames, and a dot at each."""
    for frame, value in values.items():
        if value is None:
            continue
        point = area.x_of(frame), area.y_of(value)
        if values.get(frame + 1) is not None:
            _draw_line(canvas, point, (area.x_of(frame + 1), area.y_of(values[frame + 1])), colour)
        _draw_line(canvas, point, point, colour, thickness=5)


def plot_report(report, width=800, height=360):
    """The report's warping errors against frame number, both curves, as an (H, W, 3) uint8 image."""
    canvas = np.full((height, width, 3), 255, np.uint8)
    series = _series(report)
    values = [value for by_frame, _, _ in series for value in by_frame.values() if value is not None]
    frames = [pair["frame"] for pair in report["pairs"]] or report["frames"]
    first, last = min(frames), max(frames)
    if first == last:
        first, last = first - 1, last + 1
    plot_top, plot_bottom = _MARGINS["top"], height - _MARGINS["bottom"]
    value_step = _nice_step(max(values, default=1.0) or 1.0, max(2, (plot_bottom - plot_top) // 50))
    top_value = value_step * max(math.ceil(max(values, default=1.0) / value_step), 1)
    area = _PlotArea(_MARGINS["left"], plot_top, width - _MARGINS["right"], plot_bottom, first, last, top_value)
    _draw_text(canvas, "Warping error (0-255) of each frame against the one before", area.left, 10)
    _draw_legend(canvas, series)
    _draw_value_axis(canvas, area, value_step)
    _draw_frame_axis(canvas, area)
    if not values:
        message = "no consecutive frames to compare"
        _draw_text(canvas, message, (area.left + area.right - _text_width(message)) // 2, (area.top + area.bottom) // 2)
    for by_frame, colour, _ in series:
        _draw_curve(canvas, area, by_frame, colour)
    return canvas
