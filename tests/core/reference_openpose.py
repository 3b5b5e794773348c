"""controlnet_aux's own OpenPose drawing, the reference that sd_blender.core.openpose must match.

controlnet_aux is installed without its dependencies (they would pull in another torch), so its
package may not import. Then only its drawing code is loaded from its files: open_pose/util.py
(draw_bodypose, draw_handpose, draw_facepose) and the draw_poses function of
open_pose/__init__.py, which calls them person by person. util.py's one package import, the
Keypoint and BodyResult tuples of open_pose/body.py (a module that needs scipy and model
weights), is given here with the same fields.
"""
import ast
import functools
import importlib.util
import sys
import types
from pathlib import Path
from typing import List, NamedTuple, Optional

import numpy as np

PACKAGE = "_controlnet_aux_open_pose"


class Keypoint(NamedTuple):
    x: float
    y: float
    score: float = 1.0
    id: int = -1


class BodyResult(NamedTuple):
    keypoints: List[Optional[Keypoint]]
    total_score: float = 0.0
    total_parts: int = 0


class PoseResult(NamedTuple):
    body: BodyResult
    left_hand: Optional[List[Keypoint]]
    right_hand: Optional[List[Keypoint]]
    face: Optional[List[Keypoint]]


def _open_pose_dir():
    spec = importlib.util.find_spec("controlnet_aux")
    return Path(spec.origin).parent / "open_pose"


def _load_util(open_pose_dir):
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(open_pose_dir)]
    body = types.ModuleType(f"{PACKAGE}.body")
    body.Keypoint, body.BodyResult = Keypoint, BodyResult
    sys.modules.update({PACKAGE: package, f"{PACKAGE}.body": body})
    spec = importlib.util.spec_from_file_location(f"{PACKAGE}.util", open_pose_dir / "util.py")
    util = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(util)
    return util


def _load_draw_poses(open_pose_dir, util):
    path = open_pose_dir / "__init__.py"
    tree = ast.parse(path.read_text())
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "draw_poses")
    namespace = {"np": np, "util": util, "List": List, "PoseResult": PoseResult}
    exec(compile(ast.Module(body=[function], type_ignores=[]), str(path), "exec"), namespace)
    return namespace["draw_poses"]


@functools.cache
def reference_draw_poses():
    """controlnet_aux's draw_poses(poses, H, W) -> uint8 canvas."""
    try:
        from controlnet_aux.open_pose import draw_poses

        return draw_poses
    except ImportError:
        open_pose_dir = _open_pose_dir()
        return _load_draw_poses(open_pose_dir, _load_util(open_pose_dir))


def reference_poses(people, width, height):
    """People (keypoints.Person, pixel points) as controlnet_aux's PoseResults (normalised points).

    A missing hand or face point becomes (0, 0), the annotator's own "not detected" value.
    """

    def normalised(point, missing):
        return missing if point is None else Keypoint(point[0] / width, point[1] / height)

    def part(points):
        return None if points is None else [normalised(p, Keypoint(0.0, 0.0)) for p in points]

    return [
        PoseResult(
            BodyResult([normalised(p, None) for p in person.body]),
            part(person.left_hand),
            part(person.right_hand),
            part(person.face),
        )
        for person in people
    ]
