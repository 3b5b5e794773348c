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
from ..core.png import png_base64, write_png
from .apply import as_scene_camera
from .passes import read_image
from .request import prepare_request
from .texels import TexturingError, see
from .texturing import FusionOptions, fused_textures
from .views import next_best_camera

MODES = ("sequential", "synchronized", "independent")
REFINE_STRENGTH = 0.4  # how much of a refine region is repainted
GREY_INIT = 0.5  # the init image's colour where no texture is there yet
LATENT_SCALE = 8  # the VAE's downsampling: the correspondence is sent at latent size
NEIGHBOUR_VIEWS = 2  # views each view's self-attention also reads in a synchronized job
# A last view is aimed at the unseen surface when it would see at least this fraction of the area.
FILL_VIEW_MIN_AREA = 0.005


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


@dataclass
class TextureRun:
    """One texturing's views generated on the server: the scene, the targets (texels.Target), the
    server's limits, the jobs' runner (ViewJobs), the files' stem and how views are fused."""

    scene: object
    targets: list
    limits: dict | None
    jobs: ViewJobs
    stem: str
    fusion: FusionOptions

    def generate(self, mode, cameras, views):
        """The views' images (H, W, 3 floats), in order, as `mode` (MODES) makes them."""
        if mode == "independent":
            return [self._free_view(index, camera, len(cameras)) for index, camera in enumerate(cameras)]
        if mode == "synchronized":
            return self._synchronized(cameras)
        images = []
        for index, camera in enumerate(cameras):
            if index == 0:
                images.append(self._free_view(0, camera, len(cameras)))
            else:
                print(f"view {index + 1} of {len(cameras)} ({camera.name})", flush=True)
                images.append(self._inpainted(camera, views[:index + 1], images))
        return images

    def fill_view(self, make, objects, cameras, views, images, width, height):
        """A last view aimed at the surface no view counts for, when one of the next-best
        candidates sees at least FILL_VIEW_MIN_AREA of it, inpainted like a sequential view and
        added to cameras, views and images; its camera's name, or None."""
        unseen_only = [np.where(covered, 1.0, 0.0).astype(np.float32) for covered in self._covered(views)]
        total_area = sum(float(target.surface.areas.sum()) for target in self.targets)
        camera = next_best_camera(make, objects, self.targets, unseen_only, width, height, len(cameras) + 1,
                                  min_gain=FILL_VIEW_MIN_AREA * total_area)
        if camera is None:
            return None
        print(f"view {len(cameras) + 1}: aimed at what no view saw ({camera.name})", flush=True)
        cameras.append(camera)
        views.append(see(self.scene, camera, self.targets, width, height))
        images.append(self._inpainted(camera, views, images))
        return camera.name

    def _covered(self, views):
        """Per target, which texels some view counts for in the fusion (a weight above 0)."""
        covered = [np.zeros(len(target.surface.texels), bool) for target in self.targets]
        for view in views:
            for target_covered, samples in zip(covered, view.samples):
                weights = samples.weights(self.fusion.exponent, self.fusion.discard_angle)
                target_covered[samples.texels[weights > 0]] = True
        return covered

    def _request(self, camera):
        return view_request(self.scene, camera, self.limits)

    def _free_view(self, index, camera, count):
        print(f"view {index + 1} of {count} ({camera.name})", flush=True)
        paths = self.jobs.run(self._request(camera), f"{self.stem}_view_{index + 1:02d}", f"view {index + 1}")
        return _read(paths[0])

    def _inpainted(self, camera, views, images):
        """The image of the last of `views` (seen from `camera`), inpainted over the texture the
        views before it make with their `images`: only what they missed or saw badly is repainted."""
        index = len(views) - 1
        best = best_cosines(self.targets, views[:index])
        textures = fused_textures(self.targets, views[:index], images, self.fusion)
        current, visible, cosines, best_here = _current_view(views[index], self.targets, textures, best)
        masks = sequential.view_masks(visible, cosines, best_here)
        view_stem = f"{self.stem}_view_{index + 1:02d}"
        mask_path = os.path.join(self.jobs.out, f"{self.stem}_mask_{index + 1:02d}.png")
        write_png(mask_path, masks.image())
        self.jobs.masks.append(mask_path)
        body = self._request(camera)
        image = current
        refine_strength = max(REFINE_STRENGTH, 1.0 / body["steps"])  # at least one denoising step runs
        for mask, strength, part in ((masks.generate, 1.0, "generate"), (masks.refine, refine_strength, "refine")):
            if mask.any():
                inpaint = dict(body, init_image=_png_base64(image), mask_image=_png_base64(mask * 1.0), strength=strength)
                image = _read(self.jobs.run(inpaint, f"{view_stem}_{part}", f"view {index + 1} ({part})")[0])
        image = sequential.composite(current, image, masks.blend)
        write_png(view_path(self.jobs.out, self.stem, index), np.round(image * 255).astype(np.uint8))
        return image

    def _synchronized(self, cameras):
        """All views in one server job; their images, in order."""
        most = ((self.limits or {}).get("views") or {}).get("max")
        if most is not None and len(cameras) > most:
            raise TexturingError(f"this server takes at most {most} views in a synchronized job (its --max-views), "
                                 f"not {len(cameras)}: ask for fewer views, or use the sequential mode")
        bodies = [self._request(camera) for camera in cameras]
        body = synchronized_body(self.scene, cameras, bodies, self.targets)
        print(f"{len(cameras)} views in one synchronized job", flush=True)
        paths = self.jobs.run(body, f"{self.stem}_views", f"the {len(cameras)} synchronized views",
                              route="/v1/texture-jobs")
        for index, path in enumerate(paths):
            os.replace(path, view_path(self.jobs.out, self.stem, index))
        return [_read(view_path(self.jobs.out, self.stem, index)) for index in range(len(paths))]


def best_cosines(targets, views):
    """Per target, each texel's best cosine in `views` (0 where none sees it)."""
    best = [np.zeros(len(target.surface.texels), np.float32) for target in targets]
    for view in views:
        for target_best, samples in zip(best, view.samples):
            target_best[samples.texels] = np.maximum(target_best[samples.texels], samples.cosines)
    return best


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
    return png_base64(np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8))


def synchronized_body(scene, cameras, bodies, targets):
    """The body of POST /v1/texture-jobs from the views' own job bodies: their controls, and what
    each latent pixel of each view sees of the texture (the live previews, of the first view, as the
    first view's body asks)."""
    width, height = bodies[0]["width"], bodies[0]["height"]
    grid = math.ceil(math.sqrt(len(targets)))
    correspondences = [
        _atlas_correspondence(see(scene, camera, targets, width // LATENT_SCALE, height // LATENT_SCALE).maps, grid)
        for camera in cameras
    ]
    left_out = ("controls", "num_images", "guess_mode", "init_image", "strength")
    body = {key: value for key, value in bodies[0].items() if key not in left_out}
    # One latent texel per latent pixel of a view across the whole UV square: finer textures keep
    # more of each view's detail, coarser ones make the views agree more (measured: docs/texturing.md).
    body["texture_size"] = min(max(width, height) // LATENT_SCALE * grid, 1024)
    body["views"] = [
        {"controls": view_body["controls"], "correspondence": base64.b64encode(table.tobytes()).decode("ascii"),
         "neighbours": view_neighbours}
        for view_body, table, view_neighbours in zip(bodies, correspondences, nearest_views(cameras))
    ]
    return body


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
