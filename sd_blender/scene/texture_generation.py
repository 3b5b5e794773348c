"""Generating the views of a whole-object texture on the server (docs/texturing.md), in one of
three modes:

- independent: each view generated alone from its own passes, then fused (the baseline);
- sequential: the first view generated freely; each next one inpainted: the current texture
  rendered into it is the init image, its masks (core.sequential) say what to generate
  (nothing seen yet, at full strength) and what to refine (seen much worse, at low strength);
- synchronized: every view denoised together in one server job (POST /v1/texture-jobs) that
  fuses their predicted clean latents in texture space at every step, from each view's
  correspondence of latent pixels to texels (fusion.ViewMap.correspondence).
"""
import base64
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..core import fusion, sequential
from ..core.job import DONE
from ..core.png import encode_png, write_png
from .apply import as_scene_camera
from .passes import read_image
from .request import prepare_request
from .texels import TexturingError, see

MODES = ("sequential", "synchronized", "independent")
REFINE_STRENGTH = 0.4  # how much of a refine region is repainted
GREY_INIT = 0.5  # the init image's colour where no texture is there yet
LATENT_SCALE = 8  # the VAE's downsampling: the correspondence is sent at latent size
NEIGHBOUR_VIEWS = 2  # views each view's self-attention also reads in a synchronized job


@dataclass
class ViewJobs:
    """What runs the views' jobs: start(body, stem, route) → a started core.job.GenerationJob,
    and wait(job) → its final snapshot (printing progress as it likes)."""

    start: object
    wait: object
    out: str
    server_seconds: float = 0.0
    masks: list = field(default_factory=list)  # the sequential masks' files, in view order

    def run(self, body, stem, what, route="/v1/jobs"):
        """Run one job (`what` it makes, for messages); the paths of its images. Raises
        TexturingError when it does not end done."""
        started = time.monotonic()
        snapshot = self.wait(self.start(body, stem, route))
        self.server_seconds += time.monotonic() - started
        if snapshot.state != DONE:
            raise TexturingError(f"{what}: {snapshot.message}")
        return list(snapshot.result_paths)


def view_path(out, stem, index):
    """Where view `index` (from 0) of a texturing run is written, whatever the mode."""
    return os.path.join(out, f"{stem}_view_{index + 1:02d}.png")


def clear_views(out, stem):
    """Remove the views and masks an earlier run left (they are this run's progress)."""
    for name in os.listdir(out) if os.path.isdir(out) else []:
        if name.startswith((f"{stem}_view_", f"{stem}_mask_")) and name.endswith(".png"):
            os.remove(os.path.join(out, name))


def view_request(scene, camera, limits):
    """The scene's job body with its passes rendered from `camera`, one image."""
    with as_scene_camera(scene, camera):
        body = prepare_request(scene, limits)
    body["num_images"] = 1
    return body


def _read(path):
    return read_image(path)[:, :, :3]


def generate_independent(scene, cameras, limits, jobs, stem):
    images = []
    for index, camera in enumerate(cameras):
        print(f"view {index + 1} of {len(cameras)} ({camera.name})", flush=True)
        body = view_request(scene, camera, limits)
        images.append(_read(jobs.run(body, f"{stem}_view_{index + 1:02d}", f"view {index + 1}")[0]))
    return images


def generate_sequential(scene, cameras, views, targets, limits, jobs, stem, bake):
    """`bake(views, images)` fuses the views so far into each target's texture (texturing.bake)."""
    images = []
    for index, camera in enumerate(cameras):
        print(f"view {index + 1} of {len(cameras)} ({camera.name})", flush=True)
        if index == 0:
            body = view_request(scene, camera, limits)
            images.append(_read(jobs.run(body, f"{stem}_view_01", "view 1")[0]))
        else:
            images.append(inpaint_next_view(scene, camera, views[:index + 1], images, targets, limits, jobs, stem, bake))
    return images


def inpaint_next_view(scene, camera, views, images, targets, limits, jobs, stem, bake):
    """The image of the last of `views` (seen from `camera`), inpainted over the texture that the
    views before it (with their `images`) make: only what they missed or saw badly is repainted."""
    index = len(views) - 1
    best = best_cosines(targets, views[:index])
    textures = [baked.pixels for baked in bake(views[:index], images)]
    body = view_request(scene, camera, limits)
    image = _inpainted_view(body, views[index], targets, textures, best, jobs, f"{stem}_view_{index + 1:02d}",
                            f"view {index + 1}")
    write_png(view_path(jobs.out, stem, index), np.round(image * 255).astype(np.uint8))
    return image


def best_cosines(targets, views):
    """Per target, each texel's best cosine in `views` (0 where none sees it)."""
    best = [np.zeros(len(target.surface.texels), np.float32) for target in targets]
    for view in views:
        for target_best, samples in zip(best, view.samples):
            target_best[samples.texels] = np.maximum(target_best[samples.texels], samples.cosines)
    return best


def _inpainted_view(body, view, targets, textures, best, jobs, view_stem, what):
    """Repaint what is new in this view over the current texture rendered into it."""
    current, visible, cosines, best_here = _current_view(view, targets, textures, best)
    masks = sequential.view_masks(visible, cosines, best_here)
    mask_path = os.path.join(jobs.out, view_stem.replace("_view_", "_mask_") + ".png")
    write_png(mask_path, masks.image())
    jobs.masks.append(mask_path)
    image = current
    refine_strength = max(REFINE_STRENGTH, 1.0 / body["steps"])  # at least one denoising step runs
    for mask, strength, part in ((masks.generate, 1.0, "generate"), (masks.refine, refine_strength, "refine")):
        if mask.any():
            inpaint = dict(body, init_image=_png_base64(image), mask_image=_png_base64(mask * 1.0), strength=strength)
            image = _read(jobs.run(inpaint, f"{view_stem}_{part}", f"{what} ({part})")[0])
    return sequential.composite(current, image, masks.blend)


def _current_view(view, targets, textures, best):
    """What the view shows of the texture so far (grey where no target is seen), where it sees a
    target, the cosine there, and the best cosine earlier views saw that spot at."""
    height, width = view.maps[0].visible.shape
    current = np.full((height, width, 3), GREY_INIT, np.float32)
    visible = np.zeros((height, width), bool)
    cosines = np.zeros((height, width), np.float32)
    best_here = np.zeros((height, width), np.float32)
    for target, texture, target_best, view_map in zip(targets, textures, best, view.maps):
        here = view_map.visible
        current[here] = fusion.render_into_view(texture, view_map)[here]
        best_texture = target.surface.image(target_best)[..., None]
        best_here[here] = fusion.render_into_view(best_texture, view_map)[here, 0]
        cosines[here] = view_map.cosines[here]
        visible |= here
    return current, visible, cosines, best_here


def _png_base64(pixels):
    """0–1 floats (H, W[, 3]) → base64 PNG."""
    return base64.b64encode(encode_png(np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8))).decode("ascii")


def generate_synchronized(scene, cameras, targets, limits, jobs, stem):
    """All views in one server job; returns their images, in order."""
    most = ((limits or {}).get("views") or {}).get("max")
    if most is not None and len(cameras) > most:
        raise TexturingError(f"this server takes at most {most} views in a synchronized job (its --max-views), "
                             f"not {len(cameras)}: ask for fewer views, or use the sequential mode")
    bodies = [view_request(scene, camera, limits) for camera in cameras]
    width, height = bodies[0]["width"], bodies[0]["height"]
    grid = math.ceil(math.sqrt(len(targets)))
    correspondences = [
        _atlas_correspondence(see(scene, camera, targets, width // LATENT_SCALE, height // LATENT_SCALE).maps, grid)
        for camera in cameras
    ]
    body = {key: value for key, value in bodies[0].items() if key not in ("controls", "num_images", "guess_mode")}
    body.pop("init_image", None), body.pop("strength", None)
    # One latent texel per latent pixel of a view across the whole UV square: finer textures keep
    # more of each view's detail, coarser ones make the views agree more (measured: docs/texturing.md).
    body["texture_size"] = min(max(width, height) // LATENT_SCALE * grid, 1024)
    neighbours = nearest_views(cameras)
    body["views"] = [
        {"controls": view_body["controls"], "correspondence": base64.b64encode(table.tobytes()).decode("ascii"),
         "neighbours": view_neighbours}
        for view_body, table, view_neighbours in zip(bodies, correspondences, neighbours)
    ]
    print(f"{len(cameras)} views in one synchronized job", flush=True)
    paths = jobs.run(body, f"{stem}_views", f"the {len(cameras)} synchronized views", route="/v1/texture-jobs")
    for index, path in enumerate(paths):
        os.replace(path, view_path(jobs.out, stem, index))
    return [_read(view_path(jobs.out, stem, index)) for index in range(len(paths))]


def nearest_views(cameras, count=NEIGHBOUR_VIEWS):
    """For each camera, the indexes of the `count` others looking the most alike (by the angle
    between their view directions): the views whose tokens its self-attention also reads."""
    directions = np.array([tuple(camera.matrix_world.to_3x3().col[2]) for camera in cameras])
    similarity = directions @ directions.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argsort(-similarity, axis=1)[:, :min(count, len(cameras) - 1)]
    return [[int(index) for index in row] for row in nearest]


def _atlas_correspondence(maps, grid):
    """One correspondence table for several targets: target t's UVs moved into cell t of a
    grid × grid atlas (the server fuses in one latent texture)."""
    table = np.zeros(maps[0].visible.shape + (3,), np.float32)
    for index, view_map in enumerate(maps):
        cell = view_map.correspondence()
        here = cell[..., 2] > 0
        column, row = index % grid, index // grid
        table[here, 0] = (cell[here, 0] + column) / grid
        table[here, 1] = (cell[here, 1] + row) / grid
        table[here, 2] = cell[here, 2]
    return table.astype("<f4")
