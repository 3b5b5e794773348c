"""Segmentation in the ADE20K convention of control_v11p_sd15_seg.

The 150 classes and their colours are in the order of the seg annotator (UniFormer /
MMSegmentation's ADE20K palette, as controlnet_aux uses). Each object, or each material on an
object, gets a class:

1. the object's own override (a class name set by the user), else
2. the material's override, else
3. the object's name, else 4. the material's name, matched against the class names and a few
   common synonyms ("Ground" → earth, "Crate" → box, "Character" → person), else
5. person for a mesh deformed by or parented to an armature, else
6. FALLBACK_CLASS.

Background (nothing hit) is BACKGROUND_CLASS, sky: where camera rays escape a 3D scene they
see the world background, which reads as sky to the model. Black is no ADE20K colour: the seg
annotator never outputs it, so the ControlNet has no meaning for it.
Unmatched objects are wall, ADE20K's first and most frequent class, a neutral grey.
"""
import itertools
import re

import numpy as np

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper",
    "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow",
    "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower",
    "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair",
    "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole",
    "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship",
    "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel",
    "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket",
    "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen",
    "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)

ADE20K_PALETTE = np.array([
    [120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3], [120, 120, 80],
    [140, 140, 140], [204, 5, 255], [230, 230, 230], [4, 250, 7], [224, 5, 255], [235, 255, 7],
    [150, 5, 61], [120, 120, 70], [8, 255, 51], [255, 6, 82], [143, 255, 140], [204, 255, 4],
    [255, 51, 7], [204, 70, 3], [0, 102, 200], [61, 230, 250], [255, 6, 51], [11, 102, 255],
    [255, 7, 71], [255, 9, 224], [9, 7, 230], [220, 220, 220], [255, 9, 92], [112, 9, 255],
    [8, 255, 214], [7, 255, 224], [255, 184, 6], [10, 255, 71], [255, 41, 10], [7, 255, 255],
    [224, 255, 8], [102, 8, 255], [255, 61, 6], [255, 194, 7], [255, 122, 8], [0, 255, 20],
    [255, 8, 41], [255, 5, 153], [6, 51, 255], [235, 12, 255], [160, 150, 20], [0, 163, 255],
    [140, 140, 140], [250, 10, 15], [20, 255, 0], [31, 255, 0], [255, 31, 0], [255, 224, 0],
    [153, 255, 0], [0, 0, 255], [255, 71, 0], [0, 235, 255], [0, 173, 255], [31, 0, 255],
    [11, 200, 200], [255, 82, 0], [0, 255, 245], [0, 61, 255], [0, 255, 112], [0, 255, 133],
    [255, 0, 0], [255, 163, 0], [255, 102, 0], [194, 255, 0], [0, 143, 255], [51, 255, 0],
    [0, 82, 255], [0, 255, 41], [0, 255, 173], [10, 0, 255], [173, 255, 0], [0, 255, 153],
    [255, 92, 0], [255, 0, 255], [255, 0, 245], [255, 0, 102], [255, 173, 0], [255, 0, 20],
    [255, 184, 184], [0, 31, 255], [0, 255, 61], [0, 71, 255], [255, 0, 204], [0, 255, 194],
    [0, 255, 82], [0, 10, 255], [0, 112, 255], [51, 0, 255], [0, 194, 255], [0, 122, 255],
    [0, 255, 163], [255, 153, 0], [0, 255, 10], [255, 112, 0], [143, 255, 0], [82, 0, 255],
    [163, 255, 0], [255, 235, 0], [8, 184, 170], [133, 0, 255], [0, 255, 92], [184, 0, 255],
    [255, 0, 31], [0, 184, 255], [0, 214, 255], [255, 0, 112], [92, 255, 0], [0, 224, 255],
    [112, 224, 255], [70, 184, 160], [163, 0, 255], [153, 0, 255], [71, 255, 0], [255, 0, 163],
    [255, 204, 0], [255, 0, 143], [0, 255, 235], [133, 255, 0], [255, 0, 235], [245, 0, 255],
    [255, 0, 122], [255, 245, 0], [10, 190, 212], [214, 255, 0], [0, 204, 255], [20, 0, 255],
    [255, 255, 0], [0, 153, 255], [0, 41, 255], [0, 255, 204], [41, 0, 255], [41, 255, 0],
    [173, 0, 255], [0, 245, 255], [71, 0, 255], [122, 0, 255], [0, 255, 184], [0, 92, 255],
    [184, 255, 0], [0, 133, 255], [255, 214, 0], [25, 194, 194], [102, 255, 0], [92, 0, 255],
], dtype=np.uint8)

BACKGROUND_CLASS = "sky"
FALLBACK_CLASS = "wall"
RIGGED_CLASS = "person"

# Words people name things with → ADE20K class. Blender's primitive names are here too.
SYNONYMS = {
    "ground": "earth", "terrain": "earth", "soil": "earth", "dirt": "earth", "lawn": "grass",
    "crate": "box", "cube": "box", "carton": "box", "package": "box",
    "character": "person", "human": "person", "man": "person", "woman": "person", "people": "person",
    "figure": "person", "child": "person", "boy": "person", "girl": "person",
    "window": "windowpane", "carpet": "rug", "couch": "sofa", "picture": "painting",
    "automobile": "car", "vehicle": "car", "bush": "plant", "shrub": "plant", "foliage": "plant",
    "forest": "tree", "stone": "rock", "boulder": "rock", "cliff": "rock",
    "ocean": "sea", "pond": "lake", "street": "road", "pavement": "sidewalk", "stair": "stairs",
    "staircase": "stairway", "bookshelf": "bookcase", "shelves": "shelf",
    "cupboard": "cabinet", "dresser": "chest of drawers", "drawers": "chest of drawers",
    "closet": "wardrobe", "handrail": "railing", "banister": "bannister", "fridge": "refrigerator",
    "tub": "bathtub", "tv": "television receiver", "television": "television receiver",
    "laptop": "computer", "pc": "computer", "hut": "hovel", "shack": "hovel", "cabin": "hovel",
    "lamppost": "streetlight", "aeroplane": "airplane", "aircraft": "airplane", "jet": "airplane",
    "motorbike": "minibike", "motorcycle": "minibike", "scooter": "minibike", "bike": "bicycle",
    "toy": "plaything", "pool": "swimming pool", "bin": "ashcan", "trash": "ashcan", "statue": "sculpture",
    "dog": "animal", "cat": "animal", "horse": "animal", "cow": "animal", "bird": "animal",
    "fruit": "food", "bread": "food", "cup": "glass", "mug": "glass", "display": "monitor",
    "sphere": "ball", "uvsphere": "ball", "icosphere": "ball", "cylinder": "column", "pillar": "column",
    "plane": "floor", "skydome": "sky", "clouds": "sky", "roof": "house", "home": "house",
}


def _words(name):
    """'WoodenCrate.001' → ['wooden', 'crate']."""
    return re.findall(r"[a-z]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", name).lower())


def _term_classes():
    """{words of a class name or synonym: class index}; a class name wins over a synonym."""
    terms = {tuple(name.split()): index for index, name in enumerate(ADE20K_CLASSES)}
    for word, name in SYNONYMS.items():
        terms.setdefault(tuple(word.split()), ADE20K_CLASSES.index(name))
    return terms


_TERM_CLASSES = _term_classes()
_LONGEST_TERM = max(len(term) for term in _TERM_CLASSES)


def _word_forms(word):
    """The word and, for a plural, its singulars: 'boxes' → boxes, boxe, box."""
    forms = [word]
    if word.endswith("s"):
        forms.append(word[:-1])
    if word.endswith("es"):
        forms.append(word[:-2])
    return forms


def class_in_name(name):
    """The class a name mentions, or None. When it mentions several, the last one wins: English
    puts the head noun last ("Table Lamp" is a lamp); a longer term beats its own tail
    ("Coffee Table" is a coffee table)."""
    words = _words(name)
    for end in range(len(words), 0, -1):
        for length in range(min(_LONGEST_TERM, end), 0, -1):
            for forms in itertools.product(*map(_word_forms, words[end - length:end])):
                if forms in _TERM_CLASSES:
                    return _TERM_CLASSES[forms]
    return None


def class_from_override(override):
    """Class index of a user's override: a class name or a synonym; ValueError if neither."""
    name = override.strip().lower()
    if name in ADE20K_CLASSES:
        return ADE20K_CLASSES.index(name)
    index = class_in_name(name)
    if index is None:
        raise ValueError(f"{override!r} is not an ADE20K class (e.g. wall, floor, person, box, tree)")
    return index


def resolve_class(object_name, material_name="", object_override="", material_override="", rigged=False):
    """Class index of an object's surface with a given material, by the rules in the module doc."""
    for override in (object_override, material_override):
        if override.strip():
            return class_from_override(override)
    for name in (object_name, material_name):
        index = class_in_name(name)
        if index is not None:
            return index
    return ADE20K_CLASSES.index(RIGGED_CLASS if rigged else FALLBACK_CLASS)


def segmentation_image(class_indices):
    """(H, W) class indices, −1 for background → (H, W, 3) uint8 ADE20K colours."""
    class_indices = np.asarray(class_indices)
    indices = np.where(class_indices < 0, ADE20K_CLASSES.index(BACKGROUND_CLASS), class_indices)
    return ADE20K_PALETTE[indices]
