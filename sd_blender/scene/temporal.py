"""A frame range generated in a temporal mode (core.temporal, docs/animation.md) by the command
line's `generate --frames`, which Generate Frames runs in the background.

Frames are <blend>_<scene>_<NNNN>.png in the result folder; a frame whose file is there is kept,
so a stopped batch goes on where it stopped (warp starts from the last frame written). Each
frame's motion pass and first control image go to the folder's passes/ (motion_NNNN.exr,
occlusion_NNNN.png, <kind>_NNNN.png, as the `passes` command names them), and the temporal report
(frames_report.json and .png) is written from those files once every frame is there.
"""
import base64
import os
from dataclasses import dataclass, field

from ..core import temporal
from ..core.files import clear_leftovers, write_whole
from ..core.frames_report import report_from_files, report_summary, write_frames_report
from ..core.in_flight import JobsInFlight
from ..core.job import DONE, GenerationJob
from ..core.png import png_base64, read_png
from ..core.warp import match_colour_statistics, read_motion
from .jobs import frame_file_stem, frame_paths
from .motion import MotionFrames, motion_paths, write_motion_files
from .request import checked_units, generation_size, prepare_request

PASSES_FOLDER = "passes"


class FramesStopped(Exception):
    """A frame's job did not finish; the message says which frame and why."""

    def __init__(self, frame, message):
        super().__init__(message)
        self.frame = frame


@dataclass(frozen=True)
class TemporalOptions:
    mode: str = temporal.DEFAULT_TEMPORAL_MODE
    anchor_every: int = 0  # 0: the first frame of the shot anchors every frame
    warp_strength: float = temporal.DEFAULT_WARP_STRENGTH
    match_colours: bool = False  # warp and full: the start's colours moved to the anchor frame's


@dataclass
class FramesRun:
    """scene, client, limits (the server's, or None), out (result folder), frames (a range),
    options (TemporalOptions), wait (job → final snapshot, printing progress), how_to_retry."""

    scene: object
    client: object
    limits: dict | None
    out: str
    frames: range
    options: TemporalOptions
    wait: object
    how_to_retry: str
    _anchors: dict = field(default_factory=dict)

    def __post_init__(self):
        self._motion = MotionFrames(*generation_size(self.scene))

    @property
    def passes(self):
        return os.path.join(self.out, PASSES_FOLDER)

    def path(self, frame):
        return frame_paths(self.scene, [frame], self.out)[0]

    def run(self, frames_to_make, say):
        """Generate frames_to_make (in order) in the options' mode, as many of their jobs at once as
        the server runs (temporal.jobs_at_once); raises FramesStopped, every job in flight cancelled."""
        os.makedirs(self.passes, exist_ok=True)
        for name in clear_leftovers(self.passes):
            say(f"removed passes/{name}, left half-written when an earlier run stopped")
        in_flight = JobsInFlight(temporal.jobs_at_once(self.options.mode, self.limits),
                                 lambda job, frames: self._finish(job, frames, say))
        try:
            for frames in self._jobs(frames_to_make):
                in_flight.make_room()
                say(f"frames {frames[0]}-{frames[-1]}:" if len(frames) > 1 else f"frame {frames[0]}:")
                in_flight.add(self._started(frames), frames)
            in_flight.finish_all()
        finally:
            in_flight.cancel_all()

    def _jobs(self, frames_to_make):
        """The frames of each job: chunks in the anchor mode, else one frame a job."""
        if temporal.uses_anchor(self.options.mode) and not temporal.uses_warp(self.options.mode):
            return temporal.chunks(frames_to_make, self.frames.start, self.options.anchor_every, self._chunk_size())
        return [[frame] for frame in frames_to_make]

    def _started(self, frames):
        try:
            return self._make(frames)
        except OSError as error:
            raise FramesStopped(frames[0], f"frame {frames[0]}: could not write its passes: {error}") from None

    def _finish(self, job, frames, say):
        self._wait(job, frames[0])
        say(*(self.path(frame) for frame in frames))

    def _make(self, frames):
        """The job making `frames`, started (the jobs it starts from done)."""
        if temporal.uses_warp(self.options.mode):
            return self._warped_frame(frames[0])
        if temporal.uses_anchor(self.options.mode):
            return self._anchored_chunk(frames)
        return self._start(frames[0], [self.path(frames[0])], self.body(frames[0]))

    def body(self, frame):
        """The POST /v1/jobs body of a frame, its passes rendered; its pass files written."""
        self.scene.frame_set(frame)
        body = prepare_request(self.scene, self.limits)
        self._write_pass_files(frame, body)
        return body

    def anchor_body(self, frame):
        """An anchor frame's body, its passes rendered once for all the jobs it anchors."""
        if frame not in self._anchors:
            self._anchors[frame] = self.body(frame)
        return self._anchors[frame]

    def _write_pass_files(self, frame, body):
        kind = self._control_kind()
        if kind:
            write_whole(self._control_path(kind, frame), base64.b64decode(body["controls"][0]["image"]))
        if frame > self.frames.start:
            write_motion_files(self.scene, self._motion, self.passes)

    def _chunk_size(self):
        if self.limits is None:  # the server did not say: its first job tells why
            return 1
        most = (self.limits.get("frames") or {}).get("max")
        if not most:
            raise ValueError("this server runs no frame jobs (cross-frame attention): update it, or use "
                             "--temporal off or warp")
        return most

    def _anchored_chunk(self, chunk):
        anchor = temporal.anchor_frame(chunk[0], self.frames.start, self.options.anchor_every)
        bodies = [self.body(frame) for frame in chunk]
        job_body = temporal.frame_job_body(bodies, self.anchor_body(anchor))
        return self._start(chunk[0], [self.path(frame) for frame in chunk], job_body, "/v1/frame-jobs")

    def _warped_frame(self, frame):
        body = self.body(frame)
        if frame == self.frames.start:  # nothing before it: it starts the shot (and anchors it)
            return self._start(frame, [self.path(frame)], body)
        motion_path, occlusion_path = motion_paths(self.passes, frame)
        occluded = read_png(occlusion_path) >= 128
        image, hole = temporal.warped_start(read_png(self.path(frame - 1)), read_motion(motion_path), occluded)
        if hole.any():
            inpainted = os.path.join(self.passes, f"inpainted_{frame:04d}.png")
            inpainting = self._anchored(frame, temporal.inpainting_body(body, image, hole))
            self._wait(self._start(frame, [inpainted], *inpainting), frame)
            image = read_png(inpainted)
        if self.options.match_colours:
            anchor = temporal.warped_frame_anchor(frame, self.frames.start, self.options.anchor_every)
            image = match_colour_statistics(image, read_png(self.path(anchor)))
        repaint = temporal.repaint_body(body, image, self.options.warp_strength)
        return self._start(frame, [self.path(frame)], *self._anchored(frame, repaint))

    def _anchored(self, frame, body):
        """(body, route): in full mode a frame job whose anchor is a keyframe already generated,
        starting from its own image; else the body as it is."""
        if not temporal.uses_anchor(self.options.mode):
            return body, "/v1/jobs"
        self._chunk_size()  # only to refuse a server without frame jobs, with what to do
        anchor = temporal.warped_frame_anchor(frame, self.frames.start, self.options.anchor_every)
        anchor_body = dict(self.anchor_body(anchor), init_image=png_base64(read_png(self.path(anchor))))
        return temporal.frame_job_body([body], anchor_body), "/v1/frame-jobs"

    def _start(self, frame, paths, body, route="/v1/jobs"):
        """A job for `frame` whose images go to `paths`, started."""
        return GenerationJob(self.client, body, self.out, frame_file_stem(self.scene, frame), seed_in_name=False,
                             how_to_retry=self.how_to_retry, route=route, result_paths=paths).start()

    def _wait(self, job, frame):
        """Follow the job of `frame` to its end; FramesStopped unless it is done."""
        snapshot = self.wait(job)
        if snapshot.state != DONE:
            raise FramesStopped(frame, f"frame {frame}: {snapshot.message}")

    def write_report(self):
        """The temporal report of the whole range from the files (the pass files of frames kept
        from an earlier run rendered now); returns (paths written, summary lines)."""
        for frame in self.frames:
            if not all(os.path.exists(path) for path in self._pass_files(frame)):
                self.body(frame)
        later = self.frames[1:]
        kind = self._control_kind()
        report = report_from_files(
            {frame: self.path(frame) for frame in self.frames},
            {frame: motion_paths(self.passes, frame)[0] for frame in later},
            {frame: motion_paths(self.passes, frame)[1] for frame in later},
            kind and {frame: self._control_path(kind, frame) for frame in self.frames},
            temporal=self.options.mode, anchor_every=self.options.anchor_every,
            warp_strength=self.options.warp_strength if temporal.uses_warp(self.options.mode) else None,
            match_colours=self.options.match_colours and temporal.uses_warp(self.options.mode),
            control=kind, seed=self.scene.sd_blender.seed,
        )
        return write_frames_report(self.out, report), report_summary(report)

    def _control_kind(self):
        """The pass of the first control unit (the report's floor), or None without units."""
        units = checked_units(self.scene.sd_blender)
        return units[0].kind if units else None

    def _control_path(self, kind, frame):
        return os.path.join(self.passes, f"{kind}_{frame:04d}.png")

    def _pass_files(self, frame):
        kind = self._control_kind()
        return ([self._control_path(kind, frame)] if kind else []) + (
            list(motion_paths(self.passes, frame)) if frame > self.frames.start else [])
