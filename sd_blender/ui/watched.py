"""Work that runs away from the UI thread (a worker thread, a background process) and that a
timer on the UI thread watches: one piece at a time of each kind, kept after it ended so the
panel can show its outcome. The pieces of work themselves are runtime state (state.py)."""
import bpy


class Watched:
    """The current work of one kind: `active` (None, or an object with `outcome`, set once it
    ended, and `file_changed`), watched every `interval` seconds by the timer it was started with."""

    def __init__(self, interval):
        self.active = None
        self.interval = interval
        self._timer = None

    def start(self, active, timer):
        """Watch `active` with `timer`, a bpy.app.timers callback that calls poll()."""
        self.active, self._timer = active, timer
        # Persistent: the work goes on (and its files are written) when another file is opened.
        bpy.app.timers.register(timer, first_interval=self.interval, persistent=True)

    def poll(self, snapshot_of, finish):
        """One tick of the timer: the seconds until the next, or None once the work has ended and
        finish(active, snapshot) has brought it into Blender and said how that went."""
        active = self.active
        if active is None:
            return None
        snapshot = snapshot_of(active)
        redraw_sidebars()
        if not snapshot.finished:
            return self.interval
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
        if self._timer is not None and bpy.app.timers.is_registered(self._timer):
            bpy.app.timers.unregister(self._timer)


def batch_running(watched):
    """Whether the background process `watched` follows (an active with a `batch`) is still at work."""
    active = watched.active
    return active is not None and not active.batch.finished


def areas(area_type):
    """Every area of this type in every window."""
    for window in bpy.context.window_manager.windows:
        yield from (area for area in window.screen.areas if area.type == area_type)


def redraw_sidebars():
    for area in areas("VIEW_3D"):
        area.tag_redraw()
