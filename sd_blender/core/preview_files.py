"""Live previews kept as files: the command line's `--previews DIR` writes each job's previews as
DIR/preview_<stem>_<step>.png, each whole (files.write_whole: a file under that name is never
half-written), and a background batch's watcher reads the newest back for the panel."""
import os
import re
import threading

from .files import write_whole
from .job import Preview
from .png import decode_png

_PREVIEW_NAME = re.compile(r"preview_.+_(?P<step>\d+)\.png")


def write_preview(folder, stem, preview):
    """Write a job's preview (core.job.Preview) as <folder>/preview_<stem>_<step>.png."""
    write_whole(os.path.join(folder, f"preview_{stem}_{preview.step}.png"), preview.png)


class PreviewFolder:
    """The newest preview in a folder that write_preview writes to: the one written last (the
    higher step when written in the same clock tick), each read and decoded once."""

    def __init__(self, folder):
        self.folder = folder
        self._lock = threading.Lock()
        self._key = None  # (written at, step, name) of the preview read last
        self._preview = None

    def newest(self):
        """The newest preview (core.job.Preview), or None before the first. The last one read stays
        while no newer one can be read (the folder removed included)."""
        with self._lock:
            key = self._newest_key()
            if key is not None and key != self._key:
                try:
                    with open(os.path.join(self.folder, key[2]), "rb") as file:
                        png = file.read()
                    self._preview = Preview(key[1], png, decode_png(png, f"the preview {key[2]}"))
                    self._key = key
                except (OSError, ValueError):
                    pass
            return self._preview

    def _newest_key(self):
        try:
            with os.scandir(self.folder) as entries:
                keys = [(entry.stat().st_mtime_ns, int(match["step"]), entry.name)
                        for entry in entries if (match := _PREVIEW_NAME.fullmatch(entry.name))]
        except OSError:  # not made yet, or removed (a file among them too)
            return None
        return max(keys, default=None)
