"""Work that runs away from the UI thread (a worker thread, a background process) and that a
timer on the UI thread watches: one piece at a time of each kind, kept after it ended so the
panel can show its outcome."""
import bpy


class Watched:
    """The current work of one kind: `active` (None, or an object with `outcome`, set once it
    ended, and `file_changed`), watched by `timer` every `interval` seconds."""

    def __init__(self, timer, interval):
        self.active = None
        self._timer, self._interval = timer, interval

    def start(self, active):
        self.active = active
        # Persistent: the work goes on (and its files are written) when another file is opened.
        bpy.app.timers.register(self._timer, first_interval=self._interval, persistent=True)

    def poll(self, snapshot_of, finish):
        """One tick of the timer: the seconds until the next, or None once the work has ended and
        finish(active, snapshot) has brought it into Blender and said how that went."""
        active = self.active
        if active is None:
            return None
        snapshot = snapshot_of(active)
        redraw_sidebars()
        if not snapshot.finished:
            return self._interval
        active.outcome = finish(active, snapshot)
        print(f"sd_blender: {active.outcome}")
        return None

    def file_opened(self):
        """Running work belongs to the file it started in; finished work is forgotten."""
        if self.active is None:
            return
        if self.active.outcome:
            self.active = None
        else:
            self.active.file_changed = True

    def stop_watching(self):
        if bpy.app.timers.is_registered(self._timer):
            bpy.app.timers.unregister(self._timer)


_KINDS = []


def watch(timer, interval):
    """A new kind of watched work; `timer` is its bpy.app.timers callback."""
    kind = Watched(timer, interval)
    _KINDS.append(kind)
    return kind


def areas(area_type):
    """Every area of this type in every window."""
    for window in bpy.context.window_manager.windows:
        yield from (area for area in window.screen.areas if area.type == area_type)


def redraw_sidebars():
    for area in areas("VIEW_3D"):
        area.tag_redraw()


@bpy.app.handlers.persistent
def _file_opened(*_args):
    for kind in _KINDS:
        kind.file_opened()


def register_handlers():
    bpy.app.handlers.load_post.append(_file_opened)


def unregister_handlers():
    for kind in _KINDS:
        kind.stop_watching()
    if _file_opened in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_file_opened)
