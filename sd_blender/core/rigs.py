"""Which bone of a rig is which OpenPose keypoint.

A rig preset names the bones of one naming convention (Rigify, Mixamo, Unreal, VRM, ...); the
placement rules turn the bones it found into keypoint sources (a bone's head or tail, a midpoint,
or a point fixed to the head bone); given posed bone positions, the sources give 3D keypoints.
The Blender layer (sd_blender/pose.py) supplies bone names and positions and projects the points.

Blender characters face -Y with their left at +X; "left" and "right" are the character's own.
"""
import re
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .keypoints import BODY_KEYPOINTS, FACE_KEYPOINT_COUNT, FINGERS, HAND_KEYPOINTS, Person

LEFT, RIGHT = "left", "right"
SIDES = (LEFT, RIGHT)
HEAD, TAIL = "head", "tail"
NOT_RECOGNISED = "not recognised"

# Keypoint identifiers, as overrides save them: the body names, "left_hand.thumb_4", "face.30".
HANDS = ("left_hand", "right_hand")
KEYPOINT_IDS = (
    BODY_KEYPOINTS
    + tuple(f"{hand}.{name}" for hand in HANDS for name in HAND_KEYPOINTS)
    + tuple(f"face.{index}" for index in range(FACE_KEYPOINT_COUNT))
)

LIMBS = ("upper_arm", "forearm", "hand", "thigh", "shin", "foot")
# Body joint → where it sits: (limb, end) candidates, the first whose bone the rig has.
JOINTS = {
    "shoulder": (("upper_arm", HEAD),),
    "elbow": (("forearm", HEAD), ("upper_arm", TAIL)),
    "wrist": (("hand", HEAD), ("forearm", TAIL)),
    "hip": (("thigh", HEAD),),
    "knee": (("shin", HEAD), ("thigh", TAIL)),
    "ankle": (("foot", HEAD), ("shin", TAIL)),
}
PUPILS = (68, 69)  # face landmarks: right, left
# A rig is recognised when its preset finds at least this many of the 12 limb bones, neck and head.
MIN_CORE_BONES = 4


@dataclass(frozen=True)
class HeadOffset:
    """A point fixed to the head, in head-bone lengths along the head bone (up), the character's
    forward axis and its left axis, from the head bone's head."""

    up: float
    forward: float
    left: float = 0.0

    def mirrored(self):
        return HeadOffset(self.up, self.forward, -self.left)


# For rigs without face bones: where the nose tip, the eyes and the ears sit on a head bone that
# runs from the top of the neck to the top of the skull (measured on Rigify's human metarig).
NOSE_FROM_HEAD = HeadOffset(up=0.32, forward=0.85)
LEFT_EYE_FROM_HEAD = HeadOffset(up=0.56, forward=0.6, left=0.26)
LEFT_EAR_FROM_HEAD = HeadOffset(up=0.4, forward=0.03, left=0.46)
FACE_PART_OFFSETS = {
    "nose": NOSE_FROM_HEAD,
    "left_eye": LEFT_EYE_FROM_HEAD,
    "right_eye": LEFT_EYE_FROM_HEAD.mirrored(),
    "left_ear": LEFT_EAR_FROM_HEAD,
    "right_ear": LEFT_EAR_FROM_HEAD.mirrored(),
}


@dataclass(frozen=True)
class BoneEnd:
    """A keypoint at a bone's head or tail."""

    bone: str
    end: str = HEAD

    def bones(self):
        return (self.bone,)

    def locate(self, ends):
        """ends: bone name → (head, tail) posed positions."""
        head_tail = ends.get(self.bone)
        return None if head_tail is None else tuple(head_tail[self.end == TAIL])


@dataclass(frozen=True)
class Midpoint:
    """A keypoint halfway between two others (the neck of a rig without a neck bone)."""

    a: BoneEnd
    b: BoneEnd

    def bones(self):
        return self.a.bones() + self.b.bones()

    def locate(self, ends):
        a, b = self.a.locate(ends), self.b.locate(ends)
        return None if a is None or b is None else tuple((np.asarray(a) + np.asarray(b)) / 2)


@dataclass(frozen=True)
class FromHead:
    """A keypoint at an offset from the head bone; the shoulders tell which way is left."""

    head: str
    offset: HeadOffset
    right_shoulder: BoneEnd
    left_shoulder: BoneEnd

    def bones(self):
        return (self.head,) + self.right_shoulder.bones() + self.left_shoulder.bones()

    def locate(self, ends):
        right, left = self.right_shoulder.locate(ends), self.left_shoulder.locate(ends)
        if self.head not in ends or right is None or left is None:
            return None
        head, tail = ends[self.head]
        return point_from_head(head, tail, right, left, self.offset)


def point_from_head(head, tail, right_shoulder, left_shoulder, offset):
    """The point `offset` gives on a head bone from head to tail. Left is the shoulder line made
    square to the head bone; forward is cross(left, up), which is -Y for a character facing -Y."""
    head, tail = np.asarray(head, float), np.asarray(tail, float)
    length = np.linalg.norm(tail - head)
    up = (tail - head) / length
    across = np.asarray(left_shoulder, float) - np.asarray(right_shoulder, float)
    left = across - across.dot(up) * up
    left /= np.linalg.norm(left)
    forward = np.cross(left, up)
    return tuple(head + length * (offset.up * up + offset.forward * forward + offset.left * left))


class BoneNames:
    """A rig's bone names, found exactly, else ignoring case, else without a "namespace:" prefix
    (FBX imports such as "mixamorig:Hips"). Where names clash, the first bone wins."""

    def __init__(self, names):
        self.names = tuple(names)
        self._exact = set(self.names)
        self._folded, self._unprefixed = {}, {}
        for name in self.names:
            self._folded.setdefault(name.casefold(), name)
            self._unprefixed.setdefault(name.rsplit(":", 1)[-1].casefold(), name)

    def find(self, name):
        if name in self._exact:
            return name
        return self._folded.get(name.casefold()) or self._unprefixed.get(name.casefold())


@dataclass
class RigBones:
    """The bones a preset found in a rig, by what they are."""

    preset: str
    limbs: dict = field(default_factory=dict)  # (limb, side) → bone
    neck: Optional[str] = None
    head: Optional[str] = None
    fingers: dict = field(default_factory=dict)  # (finger, side) → 1 to 3 bones, palm to tip
    face_parts: dict = field(default_factory=dict)  # "nose", "left_eye", ... → BoneEnd
    face: dict = field(default_factory=dict)  # face landmark index → BoneEnd

    def core_bone_count(self):
        return len(self.limbs) + (self.neck is not None) + (self.head is not None)


@dataclass(frozen=True)
class Preset:
    """One naming convention. Templates hold "{side}", filled with the preset's side words;
    each template is tried with each prefix in turn."""

    name: str
    sides: tuple  # the words for (left, right)
    limbs: dict  # limb → template
    neck: str
    head: str
    fingers: dict  # finger → alternative chains of 3 templates; the first whose first bone exists
    face_parts: dict = field(default_factory=dict)  # "nose", "{side}_eye", "{side}_ear" → BoneEnd template
    face: dict = field(default_factory=dict)  # face landmark index → BoneEnd template
    prefixes: tuple = ("",)

    def find(self, names):
        found = RigBones(self.name, neck=self._bone(names, self.neck), head=self._bone(names, self.head))
        for side, word in zip(SIDES, self.sides):
            for limb, template in self.limbs.items():
                _keep(found.limbs, (limb, side), self._bone(names, template, word))
            for finger, chains in self.fingers.items():
                _keep(found.fingers, (finger, side), self._chain(names, chains, word))
            for part, where in self.face_parts.items():
                _keep(found.face_parts, part.format(side=side), self._end(names, where, word))
        for index, where in self.face.items():
            _keep(found.face, index, self._end(names, where, ""))
        return found

    def _bone(self, names, template, side_word=""):
        name = template.format(side=side_word)
        return next((bone for bone in (names.find(p + name) for p in self.prefixes) if bone), None)

    def _end(self, names, where, side_word):
        bone = self._bone(names, where.bone, side_word)
        return bone and BoneEnd(bone, where.end)

    def _chain(self, names, chains, side_word):
        for chain in chains:
            bones = _leading([self._bone(names, template, side_word) for template in chain])
            if bones:
                return bones
        return None


def _keep(found, key, value):
    """found[key] = value, where something was found."""
    if value:
        found[key] = value


def _leading(bones):
    """The bones before the first missing one (a finger whose tip bone the rig lacks)."""
    return tuple(bones[: bones.index(None)] if None in bones else bones)


def _limbs(*templates):
    """Limb → template, in the order of LIMBS."""
    return dict(zip(LIMBS, templates))


def _numbered_fingers(template, words):
    """One chain per finger of bones numbered 1 to 3; template holds {finger}, {n} and {side}."""
    return {
        finger: (tuple(template.format(finger=word, n=n, side="{side}") for n in (1, 2, 3)),)
        for finger, word in zip(FINGERS, words)
    }


def _mirrored(landmarks):
    """Face landmarks given on the left side of the face (and the middle): both sides, named
    .L/.R. iBUG numbers the right side from the outside in and the left from the inside out, so
    each left landmark index comes with its right one: {(left, right): (bone, end)}."""
    both = {}
    for (left_index, right_index), (bone, end) in landmarks.items():
        both[left_index] = BoneEnd(bone, end)
        if right_index is not None:
            both[right_index] = BoneEnd(bone.replace(".L", ".R"), end)
    return both


# Rigify human metarig face bones → iBUG-68 landmarks (+ pupils 68/69). Jaw line: the temple
# end, the jaw angle and the chin side; brows (brow.B) and eyelids (lid.T/lid.B) are chains
# running from the outer corner; lips are single lines, so the inner lip (60-67) stays empty.
RIGIFY_FACE = _mirrored(
    {
        (16, 0): ("jaw.L", HEAD),
        (12, 4): ("jaw.L.001", HEAD),
        (10, 6): ("chin.L", HEAD),
        (8, None): ("chin", HEAD),
        (26, 17): ("brow.B.L", HEAD),
        (25, 18): ("brow.B.L.001", HEAD),
        (24, 19): ("brow.B.L.002", HEAD),
        (23, 20): ("brow.B.L.003", HEAD),
        (22, 21): ("brow.B.L.003", TAIL),
        (27, None): ("nose", HEAD),
        (29, None): ("nose.001", HEAD),
        (30, None): ("nose.002", HEAD),
        (35, 31): ("nose.L.001", HEAD),
        (33, None): ("nose.004", TAIL),
        (45, 36): ("lid.T.L", HEAD),
        (44, 37): ("lid.T.L.002", HEAD),
        (43, 38): ("lid.T.L.003", HEAD),
        (42, 39): ("lid.B.L", HEAD),
        (47, 40): ("lid.B.L.001", HEAD),
        (46, 41): ("lid.B.L.002", HEAD),
        (54, 48): ("lip.T.L.001", TAIL),
        (53, 49): ("lip.T.L.001", HEAD),
        (51, None): ("lip.T.L", HEAD),
        (55, 59): ("lip.B.L.001", HEAD),
        (57, None): ("lip.B.L", HEAD),
        (69, 68): ("eye.L", TAIL),
    }
)
_RIGIFY = dict(
    sides=("L", "R"),
    limbs=_limbs(*(limb + ".{side}" for limb in LIMBS)),
    neck="spine.004",
    head="spine.006",
    fingers=_numbered_fingers("{finger}.0{n}.{side}", ("thumb", "f_index", "f_middle", "f_ring", "f_pinky")),
    face_parts={
        "nose": BoneEnd("nose.002"),
        "{side}_eye": BoneEnd("eye.{side}", TAIL),
        "{side}_ear": BoneEnd("ear.{side}"),
    },
    face=RIGIFY_FACE,
)
_VRM_FINGER_WORDS = ("Thumb", "Index", "Middle", "Ring", "Little")
_VRM_FINGERS = {
    finger: (tuple(f"{{side}}{word}{joint}" for joint in ("Proximal", "Intermediate", "Distal")),)
    for finger, word in zip(FINGERS, _VRM_FINGER_WORDS)
}
# VRM 1.0 names the thumb's bones Metacarpal, Proximal, Distal; VRM 0.x names the same bones
# Proximal, Intermediate, Distal.
_VRM_THUMB_1_0 = ("{side}ThumbMetacarpal", "{side}ThumbProximal", "{side}ThumbDistal")
_VRM_FINGERS["thumb"] = (_VRM_THUMB_1_0,) + _VRM_FINGERS["thumb"]

PRESETS = (
    # Generated rigs keep the metarig's names on their deform (DEF-) and original (ORG-) bones.
    Preset("Rigify rig", prefixes=("DEF-", "ORG-"), **_RIGIFY),
    Preset("Rigify metarig", **_RIGIFY),
    Preset(
        "Mixamo",
        sides=("Left", "Right"),
        limbs=_limbs("{side}Arm", "{side}ForeArm", "{side}Hand", "{side}UpLeg", "{side}Leg", "{side}Foot"),
        neck="Neck",
        head="Head",
        fingers=_numbered_fingers("{side}Hand{finger}{n}", ("Thumb", "Index", "Middle", "Ring", "Pinky")),
        face_parts={"{side}_eye": BoneEnd("{side}Eye")},
    ),
    Preset(
        "Unreal mannequin",
        sides=("l", "r"),
        limbs=_limbs("upperarm_{side}", "lowerarm_{side}", "hand_{side}", "thigh_{side}", "calf_{side}", "foot_{side}"),
        neck="neck_01",
        head="head",
        fingers=_numbered_fingers("{finger}_0{n}_{side}", FINGERS),
    ),
    Preset(
        "VRM",
        sides=("left", "right"),
        limbs=_limbs(
            "{side}UpperArm", "{side}LowerArm", "{side}Hand", "{side}UpperLeg", "{side}LowerLeg", "{side}Foot"
        ),
        neck="neck",
        head="head",
        fingers=_VRM_FINGERS,
        face_parts={"{side}_eye": BoneEnd("{side}Eye")},
    ),
    Preset(
        "VRoid",
        sides=("L", "R"),
        limbs=_limbs(
            *("J_Bip_{side}_" + word for word in ("UpperArm", "LowerArm", "Hand", "UpperLeg", "LowerLeg", "Foot"))
        ),
        neck="J_Bip_C_Neck",
        head="J_Bip_C_Head",
        fingers=_numbered_fingers("J_Bip_{side}_{finger}{n}", _VRM_FINGER_WORDS),
        face_parts={"{side}_eye": BoneEnd("J_Adj_{side}_FaceEye")},
    ),
)

GENERIC = "Generic left/right"
# A side word or letter at either end of a name, apart from the rest by a separator (letters).
_SIDED_NAME = (
    re.compile(r"^(?P<side>left|right)[\s._-]?(?P<rest>.+)$", re.IGNORECASE),
    re.compile(r"^(?P<rest>.+?)[\s._-]?(?P<side>left|right)$", re.IGNORECASE),
    re.compile(r"^(?P<side>[lr])[\s._-](?P<rest>.+)$", re.IGNORECASE),
    re.compile(r"^(?P<rest>.+?)[\s._-](?P<side>[lr])$", re.IGNORECASE),
)
_GENERIC_LIMB_WORDS = {
    "upperarm": "upper_arm",
    "arm": "upper_arm",
    "forearm": "forearm",
    "lowerarm": "forearm",
    "hand": "hand",
    "thigh": "thigh",
    "upleg": "thigh",
    "upperleg": "thigh",
    "shin": "shin",
    "calf": "shin",
    "lowerleg": "shin",
    "leg": "shin",
    "foot": "foot",
}
_GENERIC_FACE_PARTS = {"eye": "eye", "ear": "ear"}
# Separators gone: "f_index.01" → "findex01", "HandThumb1" → "handthumb1".
_GENERIC_FINGER = re.compile(r"^(?:hand|finger|f)?(thumb|index|middle|ring|pinky|little)0?([123])$")


def split_side(name):
    """(side, the rest of the name) for a name marked left or right, else (None, name)."""
    for pattern in _SIDED_NAME:
        match = pattern.match(name)
        if match:
            return (LEFT if match["side"][0] in "lL" else RIGHT), match["rest"]
    return None, name


def generic_rig_bones(names):
    """Bones named by what they are plus a side: upper_arm.L, UpperArm_R, LeftLeg, l_hand, ..."""
    found = RigBones(GENERIC)
    fingers = {}
    for bone in names.names:
        side, rest = split_side(bone.rsplit(":", 1)[-1])
        word = re.sub(r"[\s._-]", "", rest).casefold()
        plain = re.sub(r"\d+$", "", word)
        finger = _GENERIC_FINGER.match(word)
        if side is None and plain in ("neck", "head"):
            setattr(found, plain, getattr(found, plain) or bone)
        elif side and plain in _GENERIC_LIMB_WORDS:
            found.limbs.setdefault((_GENERIC_LIMB_WORDS[plain], side), bone)
        elif side and plain in _GENERIC_FACE_PARTS:
            found.face_parts.setdefault(f"{side}_{_GENERIC_FACE_PARTS[plain]}", BoneEnd(bone))
        elif side and finger:
            name = "pinky" if finger[1] == "little" else finger[1]
            fingers.setdefault((name, side), {}).setdefault(int(finger[2]), bone)
    for key, numbered in fingers.items():
        _keep(found.fingers, key, _leading([numbered.get(n) for n in (1, 2, 3)]))
    return found


def find_rig_bones(bone_names):
    """The preset that finds the most limb, neck and head bones (the first on a tie, so named
    presets before the generic one), or None when no preset finds MIN_CORE_BONES."""
    names = BoneNames(bone_names)
    candidates = [preset.find(names) for preset in PRESETS] + [generic_rig_bones(names)]
    best = max(candidates, key=RigBones.core_bone_count)
    return best if best.core_bone_count() >= MIN_CORE_BONES else None


def keypoint_sources(rig):
    """Keypoint id → source, for what the rig's bones allow."""
    sources = {
        f"{side}_{joint}": _limb_end(rig, side, candidates) for side in SIDES for joint, candidates in JOINTS.items()
    }
    right, left = sources["right_shoulder"], sources["left_shoulder"]
    sources["neck"] = BoneEnd(rig.neck) if rig.neck else (right and left and Midpoint(right, left))
    for part, offset in FACE_PART_OFFSETS.items():
        from_head = rig.head and right and left and FromHead(rig.head, offset, right, left)
        sources[part] = rig.face_parts.get(part) or from_head
    for side, hand in zip(SIDES, HANDS):
        sources.update(_hand_sources(rig, side, hand, sources[f"{side}_wrist"]))
    if set(rig.face) - set(PUPILS):  # eye bones alone make no face
        sources.update({f"face.{index}": where for index, where in rig.face.items()})
    return {keypoint: source for keypoint, source in sources.items() if source}


def _limb_end(rig, side, candidates):
    for limb, end in candidates:
        if (limb, side) in rig.limbs:
            return BoneEnd(rig.limbs[limb, side], end)
    return None


def _hand_sources(rig, side, hand, wrist):
    """The wrist and four points per finger (each bone's head, then the last bone's tail), for a
    hand with finger bones. A thumb's first bone is its metacarpal in every preset."""
    sources = {}
    for finger in FINGERS:
        chain = rig.fingers.get((finger, side), ())
        points = [BoneEnd(bone) for bone in chain] + [BoneEnd(chain[-1], TAIL)] if chain else []
        sources.update({f"{hand}.{finger}_{joint}": point for joint, point in zip(range(1, 5), points)})
    if sources and wrist:
        sources[f"{hand}.wrist"] = wrist
    return sources


@dataclass(frozen=True)
class RigMap:
    """Where each keypoint of one armature comes from."""

    preset: str
    sources: dict  # keypoint id → BoneEnd | Midpoint | FromHead

    def bones(self):
        """The bones whose posed positions locate() needs."""
        return {bone for source in self.sources.values() for bone in source.bones()}

    def locate(self, ends):
        """Keypoint id → 3D point (None where a bone is missing), from bone → (head, tail)."""
        return {keypoint: source.locate(ends) for keypoint, source in self.sources.items()}

    def person(self, pixels):
        """The Person from keypoint id → pixel (x, y); hands and face only where the rig has them."""
        return Person(
            body=[pixels.get(name) for name in BODY_KEYPOINTS],
            left_hand=self._part(pixels, "left_hand", HAND_KEYPOINTS),
            right_hand=self._part(pixels, "right_hand", HAND_KEYPOINTS),
            face=self._part(pixels, "face", range(FACE_KEYPOINT_COUNT)),
        )

    def _part(self, pixels, part, names):
        ids = [f"{part}.{name}" for name in names]
        return [pixels.get(keypoint) for keypoint in ids] if any(k in self.sources for k in ids) else None


def map_rig(bone_names, overrides=()):
    """The RigMap of an armature from its bone names (in the armature's order) and its overrides,
    (keypoint id, bone, HEAD | TAIL) triples that win over the preset. Overrides naming a bone
    the armature lacks, or an unknown keypoint, are ignored."""
    rig = find_rig_bones(bone_names)
    sources = keypoint_sources(rig) if rig else {}
    known = set(bone_names)
    for keypoint, bone, end in overrides:
        if bone in known and keypoint in KEYPOINT_IDS:
            sources[keypoint] = BoneEnd(bone, end)
    return RigMap(rig.preset if rig else NOT_RECOGNISED, sources)
