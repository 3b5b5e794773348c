"""OpenPose control images and OpenPose JSON from people's keypoints.

The image is drawn exactly as controlnet_aux 0.0.10's OpenPose annotator draws it
(open_pose/util.py: draw_bodypose, draw_handpose and draw_facepose, called person by person),
because that is what the OpenPose ControlNets were trained on: a black canvas; per person the
17 limbs as filled ellipses at 60 % of their colour, then the 18 joints, then the left and the
right hand, then the face. Colours are RGB, as in the image the annotator hands to the ControlNet.

Blender ships numpy but not OpenCV, so the OpenCV drawing calls the annotator makes
(ellipse2Poly, fillConvexPoly, circle and line, all with LINE_8 and no anti-aliasing) are
reproduced here with their integer and 16.16 fixed-point arithmetic, pixel for pixel.

A point is (x, y) in pixels as in keypoints.Point; one outside the canvas counts as missing.
"""
import math

import numpy as np

# Pairs of keypoints.BODY_KEYPOINTS indices, in the annotator's drawing order; limb i has BODY_COLORS[i].
BODY_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
# Joint i has colour i.
BODY_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
LIMB_SHADE = 0.6
STICK_WIDTH = 4  # the limb ellipse's half width
JOINT_RADIUS = 4
# Pairs of keypoints.HAND_KEYPOINTS indices: the wrist to each finger, then along it.
HAND_EDGES = tuple(
    pair for base in range(1, 21, 4) for pair in ((0, base), (base, base + 1), (base + 1, base + 2), (base + 2, base + 3))
)
HAND_LINE_THICKNESS = 2
HAND_JOINT_RADIUS = 4
HAND_JOINT_COLOR = (0, 0, 255)
FACE_POINT_RADIUS = 3
FACE_POINT_COLOR = (255, 255, 255)

_XY_SHIFT = 16  # OpenCV's fixed point: 16 fractional bits
_XY_ONE = 1 << _XY_SHIFT
# OpenCV's sine table, one entry per degree from 0 to 450, as float32 literals of 7 decimals.
_SIN_TABLE = np.round(np.sin(np.radians(np.arange(451))), 7).astype(np.float32).astype(np.float64)


def _rainbow(hue):
    """matplotlib's hsv_to_rgb((hue, 1, 1)) * 255, rounded as OpenCV rounds a colour."""
    sector = int(hue * 6.0)
    rise = hue * 6.0 - sector
    fall = 1.0 - rise
    rgb = ((1.0, rise, 0.0), (fall, 1.0, 0.0), (0.0, 1.0, rise), (0.0, fall, 1.0), (rise, 0.0, 1.0), (1.0, 0.0, fall))
    return tuple(round(channel * 255) for channel in rgb[sector % 6])


HAND_EDGE_COLORS = tuple(_rainbow(i / float(len(HAND_EDGES))) for i in range(len(HAND_EDGES)))


def sdxl_stick_scale(width, height):
    """The stick_scale that xinsir/controlnet-openpose-sdxl-1.0 was trained with for this image size.

    Its model card replaces draw_bodypose with one whose stick width and joint radius are
    multiplied by 1 below 500 px on the long side, 2 below 1000 px, 3 below 2000 px and one
    more per further 1000 px, up to 7. (controlnet_aux's detector, as other SDXL model cards use
    it, draws at 512 px and is resized to the generation size: about max(width, height) / 512.)
    """
    longest = max(width, height)
    return 1 if longest < 500 else min(longest // 1000 + 2, 7)


def draw_openpose(people, width, height, stick_scale=1.0):
    """The OpenPose control image of `people` (keypoints.Person) as (height, width, 3) uint8 RGB.

    stick_scale multiplies the body's stick width and joint radius (see sdxl_stick_scale);
    hands and face keep the annotator's sizes, as in the SDXL model's drawing.
    """
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for person in people:
        body = _on_canvas(person.body, width, height)
        _draw_body(canvas, body, int(STICK_WIDTH * stick_scale), int(JOINT_RADIUS * stick_scale))
        for hand in (person.left_hand, person.right_hand):
            if hand:
                _draw_hand(canvas, _on_canvas(hand, width, height))
        if person.face:
            _draw_face(canvas, _on_canvas(person.face, width, height))
    return canvas


def openpose_json(people, width, height):
    """People's keypoints in OpenPose's JSON layout: x, y, confidence triples in pixels.

    A missing or off-canvas point is 0, 0, 0; a missing hand or face is an empty list.
    """
    return {
        "canvas_width": width,
        "canvas_height": height,
        "people": [
            {
                "pose_keypoints_2d": _triples(person.body, width, height),
                "hand_left_keypoints_2d": _triples(person.left_hand, width, height),
                "hand_right_keypoints_2d": _triples(person.right_hand, width, height),
                "face_keypoints_2d": _triples(person.face, width, height),
            }
            for person in people
        ],
    }


def _on_canvas(points, width, height):
    return [p if p is not None and 0 <= p[0] < width and 0 <= p[1] < height else None for p in points]


def _triples(points, width, height):
    if points is None:
        return []
    flat = []
    for point in _on_canvas(points, width, height):
        flat += [0.0, 0.0, 0.0] if point is None else [float(point[0]), float(point[1]), 1.0]
    return flat


def _pixel(point):
    return int(point[0]), int(point[1])


def _draw_body(canvas, body, stick_width, joint_radius):
    for (a, b), color in zip(BODY_LIMBS, BODY_COLORS):
        if body[a] is not None and body[b] is not None:
            shade = tuple(int(c * LIMB_SHADE) for c in color)
            _fill_convex_polygon(canvas, _limb_polygon(body[a], body[b], stick_width), shade, shift=0)
    for point, color in zip(body, BODY_COLORS):
        if point is not None:
            _fill_circle(canvas, _pixel(point), joint_radius, color)


def _limb_polygon(start, end, half_width):
    """The limb's ellipse with the annotator's float arithmetic and truncations."""
    (x1, y1), (x2, y2) = start, end
    length = ((y1 - y2) ** 2 + (x1 - x2) ** 2) ** 0.5
    angle = math.degrees(math.atan2(y1 - y2, x1 - x2))
    center = (int((x1 + x2) / 2), int((y1 + y2) / 2))
    return _ellipse_polygon(center, (int(length / 2), half_width), int(angle))


def _drawn_pixels(points):
    # The annotator's hand and face code treats (0, 0) as "not detected": it skips any point
    # whose pixel column or row is 0.
    pixels = [None if p is None else _pixel(p) for p in points]
    return [p if p is not None and p[0] > 0 and p[1] > 0 else None for p in pixels]


def _draw_hand(canvas, hand):
    pixels = _drawn_pixels(hand)
    for (a, b), color in zip(HAND_EDGES, HAND_EDGE_COLORS):
        if pixels[a] is not None and pixels[b] is not None:
            _thick_line(canvas, pixels[a], pixels[b], color, HAND_LINE_THICKNESS)
    for pixel in pixels:
        if pixel is not None:
            _fill_circle(canvas, pixel, HAND_JOINT_RADIUS, HAND_JOINT_COLOR)


def _draw_face(canvas, face):
    for pixel in _drawn_pixels(face):
        if pixel is not None:
            _fill_circle(canvas, pixel, FACE_POINT_RADIUS, FACE_POINT_COLOR)


def _ellipse_polygon(center, axes, angle):
    """cv2.ellipse2Poly(center, axes, angle, 0, 360, 1): integer vertices, repeats dropped."""
    angle %= 360
    cos_a, sin_a = _SIN_TABLE[450 - angle], _SIN_TABLE[angle]
    degrees = np.arange(361)
    x = axes[0] * _SIN_TABLE[450 - degrees]
    y = axes[1] * _SIN_TABLE[degrees]
    xs = np.rint(center[0] + x * cos_a - y * sin_a).astype(np.int64)
    ys = np.rint(center[1] + x * sin_a + y * cos_a).astype(np.int64)
    changed = np.r_[True, (xs[1:] != xs[:-1]) | (ys[1:] != ys[:-1])]
    polygon = list(zip(xs[changed].tolist(), ys[changed].tolist()))
    return polygon if len(polygon) > 1 else [tuple(center)] * 2


def _c_div(a, b):
    """Integer division truncating toward zero, as in C."""
    quotient = abs(a) // abs(b)
    return quotient if (a < 0) == (b < 0) else -quotient


def _hline(canvas, y, x1, x2, color):
    height, width = canvas.shape[:2]
    x1, x2 = max(x1, 0), min(x2, width - 1)
    if 0 <= y < height and x1 <= x2:
        canvas[y, x1 : x2 + 1] = color


def _put_pixels(canvas, xs, ys, color):
    height, width = canvas.shape[:2]
    xs, ys = np.asarray(xs, dtype=np.int64), np.asarray(ys, dtype=np.int64)
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    canvas[ys[inside], xs[inside]] = color


def _fill_circle(canvas, center, radius, color):
    """OpenCV's filled Circle (LINE_8, no shift): the midpoint circle's spans."""
    cx, cy = center
    err, dx, dy, plus, minus = 0, radius, 0, 1, 2 * radius - 1
    while dx >= dy:
        for y, half in ((cy - dy, dx), (cy + dy, dx), (cy - dx, dy), (cy + dx, dy)):
            _hline(canvas, y, cx - half, cx + half, color)
        dy += 1
        err += plus
        plus += 2
        if err > 0:
            err -= minus
            dx -= 1
            minus -= 2


def _thick_line(canvas, p0, p1, color, thickness):
    """cv2.line with thickness > 1 (LINE_8): a 16.16 fixed-point rectangle and round end caps."""
    (x0, y0), (x1, y1) = ((x << _XY_SHIFT, y << _XY_SHIFT) for x, y in (p0, p1))
    dx, dy = (x0 - x1) / _XY_ONE, (y1 - y0) / _XY_ONE
    squared_length = dx * dx + dy * dy
    half_thickness = thickness << (_XY_SHIFT - 1)
    if squared_length > np.finfo(float).eps:
        r = (half_thickness + (thickness & 1) * _XY_ONE * 0.5) / math.sqrt(squared_length)
        ox, oy = round(dy * r), round(dx * r)
        rectangle = [(x0 + ox, y0 + oy), (x0 - ox, y0 - oy), (x1 - ox, y1 - oy), (x1 + ox, y1 + oy)]
        _fill_convex_polygon(canvas, rectangle, color, shift=_XY_SHIFT)
    cap_radius = (half_thickness + (_XY_ONE >> 1)) >> _XY_SHIFT
    for end in (p0, p1):
        _fill_circle(canvas, end, cap_radius, color)


def _fill_convex_polygon(canvas, points, color, shift):
    """OpenCV's FillConvexPoly (LINE_8) for vertices with `shift` fractional bits.

    It draws the outline, then fills each row between the polygon's two sides, walked down
    from the top vertex in 16.16 fixed point with rounded steps.
    """
    height, width = canvas.shape[:2]
    _draw_outline(canvas, points, color, shift)
    half = 1 << shift >> 1
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_min, x_max = (min(xs) + half) >> shift, (max(xs) + half) >> shift
    y_min, y_max = (min(ys) + half) >> shift, (max(ys) + half) >> shift
    if len(points) < 3 or x_max < 0 or y_max < 0 or x_min >= width or y_min >= height:
        return
    top = ys.index(min(ys))
    sides = [_Side(top, 1, y_min), _Side(top, len(points) - 1, y_min)]
    segments_left = len(points)
    for y in range(y_min, min(y_max, height - 1) + 1):
        for side in sides:
            if y >= side.end_row:
                segments_left = side.next_segment(xs, ys, y, shift, segments_left)
        if segments_left < 0:
            return
        if y >= 0:
            left, right = sorted((sides[0].x, sides[1].x))
            _hline(canvas, y, (left + (_XY_ONE >> 1)) >> _XY_SHIFT, (right + (_XY_ONE >> 1)) >> _XY_SHIFT, color)
        for side in sides:
            side.x += side.dx


def _draw_outline(canvas, points, color, shift):
    height, width = canvas.shape[:2]
    line_pixels = _line_pixels if shift == 0 else _fixed_point_line_pixels
    xs, ys = [], []
    for start, end in zip(points[-1:] + points[:-1], points):
        line_xs, line_ys = line_pixels(width, height, start, end)
        xs += line_xs
        ys += line_ys
    _put_pixels(canvas, xs, ys, color)


class _Side:
    """One side of a convex polygon, walked from its top vertex one way round (step +1 or -1)."""

    def __init__(self, vertex, step, end_row):
        self.vertex, self.step, self.end_row = vertex, step, end_row
        self.x = self.dx = 0  # 16.16 fixed point, set by next_segment

    def next_segment(self, xs, ys, y, shift, segments_left):
        """Moves to the first segment on from here that ends below row y; returns segments_left less those tried."""
        count = len(xs)
        start, end = self.vertex, (self.vertex + self.step) % count
        while True:
            segments_left -= 1
            if segments_left < 0:
                return segments_left
            end_row = (ys[end] + (1 << shift >> 1)) >> shift
            if end_row > y:
                x_start, x_end = xs[start] << (_XY_SHIFT - shift), xs[end] << (_XY_SHIFT - shift)
                self.vertex, self.end_row, self.x = end, end_row, x_start
                self.dx = _c_div((x_end - x_start) * 2 + end_row - y, 2 * (end_row - y))
                return segments_left
            start, end = end, (end + self.step) % count


def _clip_line(width, height, p1, p2):
    """OpenCV's clipLine to [0, width) x [0, height); None when the line misses it."""
    (x1, y1), (x2, y2) = p1, p2
    right, bottom = width - 1, height - 1

    def outcode(x, y):
        return (x < 0) + (x > right) * 2 + (y < 0) * 4 + (y > bottom) * 8

    c1, c2 = outcode(x1, y1), outcode(x2, y2)
    if (c1 & c2) == 0 and (c1 | c2) != 0:
        if c1 & 12:
            a = 0 if c1 < 8 else bottom
            x1 += int(float(a - y1) * (x2 - x1) / (y2 - y1))
            y1 = a
            c1 = (x1 < 0) + (x1 > right) * 2
        if c2 & 12:
            a = 0 if c2 < 8 else bottom
            x2 += int(float(a - y2) * (x2 - x1) / (y2 - y1))
            y2 = a
            c2 = (x2 < 0) + (x2 > right) * 2
        if (c1 & c2) == 0 and (c1 | c2) != 0:
            if c1:
                a = 0 if c1 == 1 else right
                y1 += int(float(a - x1) * (y2 - y1) / (x2 - x1))
                x1 = a
                c1 = 0
            if c2:
                a = 0 if c2 == 1 else right
                y2 += int(float(a - x2) * (y2 - y1) / (x2 - x1))
                x2 = a
                c2 = 0
    return None if c1 | c2 else ((x1, y1), (x2, y2))


def _line_pixels(width, height, p1, p2):
    """OpenCV's 8-connected Line between pixels: Bresenham from the left end, clipped first."""
    inside = 0 <= p1[0] < width and 0 <= p2[0] < width and 0 <= p1[1] < height and 0 <= p2[1] < height
    clipped = (p1, p2) if inside else _clip_line(width, height, p1, p2)
    if clipped is None:
        return [], []
    (x, y), (x2, y2) = clipped if clipped[0][0] <= clipped[1][0] else clipped[::-1]
    dx, dy = x2 - x, y2 - y
    row_step = 1 if dy >= 0 else -1
    dy = abs(dy)
    major, minor = ((1, 0), (0, row_step)) if dx >= dy else ((0, row_step), (1, 0))
    dx, dy = max(dx, dy), min(dx, dy)
    err = dx - 2 * dy
    xs, ys = [], []
    for _ in range(dx + 1):
        xs.append(x)
        ys.append(y)
        x, y = x + major[0], y + major[1]
        if err < 0:
            x, y = x + minor[0], y + minor[1]
            err += 2 * dx
        err -= 2 * dy
    return xs, ys


def _fixed_point_line_pixels(width, height, p1, p2):
    """OpenCV's Line2: the 8-connected line between 16.16 fixed-point ends (may leave the canvas)."""
    clipped = _clip_line(width << _XY_SHIFT, height << _XY_SHIFT, p1, p2)
    if clipped is None:
        return [], []
    (x1, y1), (x2, y2) = clipped
    half = _XY_ONE >> 1
    along_x = abs(x2 - x1) > abs(y2 - y1)
    if (x2 < x1) if along_x else (y2 < y1):
        (x1, y1), (x2, y2) = (x2, y2), (x1, y1)
    if along_x:
        y_step = _c_div((y2 - y1) << _XY_SHIFT, (x2 - x1) | 1)
        steps = np.arange(((x2 - x1) >> _XY_SHIFT) + 1, dtype=np.int64)
        xs, ys = ((x1 + half) >> _XY_SHIFT) + steps, (y1 + half + y_step * steps) >> _XY_SHIFT
    else:
        x_step = _c_div((x2 - x1) << _XY_SHIFT, (y2 - y1) | 1)
        steps = np.arange(((y2 - y1) >> _XY_SHIFT) + 1, dtype=np.int64)
        xs, ys = (x1 + half + x_step * steps) >> _XY_SHIFT, ((y1 + half) >> _XY_SHIFT) + steps
    return [(x2 + half) >> _XY_SHIFT] + xs.tolist(), [(y2 + half) >> _XY_SHIFT] + ys.tolist()
