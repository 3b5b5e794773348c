"""Live previews kept as files: the command line's `--previews DIR` writes each job's previews as
DIR/preview_<stem>_<step>.png, each whole (files.write_whole: a file under that name is never
half-written), and a background batch's watcher reads the newest back for the panel."""
import os
import re

from .files import remove_if_there, write_whole
from .job import Preview
from .png import decode_png

_PREVIEW_NAME = re.compile(r"preview_.+_(?P<step>\d+)\.png")


def write_preview(folder, stem, preview):
    """Write a job's preview (core.job.Preview) as <folder>/preview_<stem>_<step>.png."""
    write_whole(os.path.join(folder, f"preview_{stem}_{preview.step}.png"), preview.png)


class PreviewFolder:
    """The newest preview in a folder that write_preview writes to: the one written last (the
    higher step when written in the same clock tick), each read and decoded once. The older ones
    are removed as it goes, so a long batch's folder holds a few files, not every preview. One
    thread reads it."""

    def __init__(self, folder):
        self.folder = folder
        self._key = None  # (written at, step, name) of the preview read last
        self._preview = None

    def newest(self):
        """The newest preview (core.job.Preview), or None before the first. The last one read stays
        while no newer one can be read (the folder removed included)."""
        keys = self._keys()
        newest = max(keys, default=None)
        if newest is not None and newest != self._key:
            self._read(newest)
        if newest is not None and newest == self._key:  # read: the ones before it are done with
            for older in keys:
                if older != newest:
                    remove_if_there(os.path.join(self.folder, older[2]))
        return self._preview

    def _read(self, key):
        """The preview of `key` read and decoded; one that cannot be (gone, or not a PNG) leaves the last."""
        _, step, name = key
        try:
            with open(os.path.join(self.folder, name), "rb") as file:
                png = file.read()
            self._preview, self._key = Preview(step, png, decode_png(png, f"the preview {name}")), key
        except (OSError, ValueError):
            pass

    def _keys(self):
        """(written at, step, name) of each preview in the folder."""
        try:
            with os.scandir(self.folder) as entries:
                return [(entry.stat().st_mtime_ns, int(match["step"]), entry.name)
                        for entry in entries if (match := _PREVIEW_NAME.fullmatch(entry.name))]
        except OSError:  # not made yet, or removed (a file among them too)
            return []
