"""Work done by a background process (the command line's `generate --frames`, or `texture`),
watched from Blender's UI thread, which never renders or waits for it itself.

Progress is read from the result folder: a frame (or a texture's view) is done when its file is
there (the command line writes each file whole). The process's last words say why it stopped.
With a previews folder (the command's --previews), the newest live preview written there is read
back too. A thread of the batch reads these files, so the UI thread's snapshots touch no disk (a
network share's included): no stat per frame, no folder scan, no PNG decode.
"""
import _thread
import contextlib
import os
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass

from .job import Preview
from .preview_files import PreviewFolder

# Written to the command's standard input by cancel(): the command line (--cancel-on-stdin) then
# cancels its jobs on the server and exits, as on Ctrl-C. A line, not a signal: the same on every
# OS, and no signal handler of Blender's stands in its way. One that has not exited after this long
# is terminated.
CANCEL_LINE = "cancel"
CANCEL_GRACE_SECONDS = 15.0
FILES_POLL_SECONDS = 0.25  # how often the frames and previews are looked at while the process runs

RUNNING = "running"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"


@dataclass(frozen=True)
class BatchSnapshot:
    state: str
    frames_done: int
    frame_count: int
    message: str
    preview: Preview | None = None  # the newest live preview in the batch's previews folder

    @property
    def finished(self):
        return self.state != RUNNING

    @property
    def fraction(self):
        return self.frames_done / self.frame_count if self.frame_count else 0.0


class FrameBatch:
    def __init__(self, command, frame_paths, env=None, temporary_folder=None, unit="frame",
                 again="generating the frames again goes on from there", previews=None):
        """`command` writes frame_paths[i] for the i-th frame (or `unit`), and stops as on Ctrl-C
        when CANCEL_LINE comes on its standard input (listen_for_cancel); `env` is its environment;
        `temporary_folder` (the command's input) is removed once the command has ended; `again`
        says what running it again does with what is kept; `previews` is the folder the command
        writes its live previews to (core.preview_files), None when it writes none."""
        self._command = command
        self._previews = PreviewFolder(previews) if previews else None
        self._frames_done = 0  # frame files there, as last counted
        self._preview = None  # the newest preview read from that folder
        self._process_ended = threading.Event()
        self.frame_paths = tuple(frame_paths)
        self._unit, self._again = unit, again
        self._env = env
        self.temporary_folder = temporary_folder
        self._lock = threading.Lock()
        self._state = RUNNING
        self._last_words = ""
        self._error = ""  # the command line's own error line ("sd_blender: ...")
        self._cancel_requested = False
        self._process = None
        self._watcher = threading.Thread(target=self._watch, name="sd_blender frames", daemon=True)

    def start(self):
        self._process = subprocess.Popen(
            self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", env=self._env,
        )
        self._watcher.start()
        return self

    def cancel(self):
        """Stop after cancelling the frames in progress on the server (as Ctrl-C does)."""
        with self._lock:
            self._cancel_requested = True
        if self._process.poll() is None:
            try:
                self._process.stdin.write(CANCEL_LINE + "\n")
                self._process.stdin.flush()
            except (OSError, ValueError):  # it has just ended (its pipe broken, or closed by the watcher)
                return
            terminate = threading.Timer(CANCEL_GRACE_SECONDS, self._terminate_if_running)
            terminate.daemon = True
            terminate.start()

    def _terminate_if_running(self):
        if self._process.poll() is None:
            self._process.terminate()

    @property
    def finished(self):
        """Whether the process has ended (no look at the result folder: cheap enough for a poll())."""
        with self._lock:
            return self._state != RUNNING

    def wait(self, timeout=None):
        self._watcher.join(timeout)
        return self.snapshot()

    def snapshot(self):
        with self._lock:
            return BatchSnapshot(self._state, self._frames_done, len(self.frame_paths),
                                 self._message(self._frames_done), self._preview)

    def _follow_files(self):
        """Count the frames done and read the newest preview, off Blender's UI thread (snapshot()
        only hands them on): at once, every FILES_POLL_SECONDS while the process runs, and once
        more after it has ended."""
        while True:
            ended = self._process_ended.is_set()
            frames_done = sum(os.path.exists(path) for path in self.frame_paths)
            preview = self._previews.newest() if self._previews else None
            with self._lock:
                self._frames_done, self._preview = frames_done, preview
            if ended:
                return
            self._process_ended.wait(FILES_POLL_SECONDS)

    def _message(self, frames_done):
        count = len(self.frame_paths)
        unit = self._unit
        if self._state == RUNNING:
            return f"{unit} {min(frames_done + 1, count)} of {count}: {self._last_words}".rstrip(": ")
        if self._state == DONE:
            return f"done: {count} {unit}(s) in {os.path.dirname(self.frame_paths[0])}"
        kept = f"{frames_done} of {count} {unit}s done and kept; {self._again}"
        if self._state == CANCELLED:
            return f"cancelled: {kept}"
        return f"{self._error or self._last_words or 'the frames stopped'}; {kept}"

    def _watch(self):
        follower = threading.Thread(target=self._follow_files, name="sd_blender frame files", daemon=True)
        follower.start()
        for line in self._process.stdout:
            line = line.strip()
            if not line:
                continue
            with self._lock:
                self._last_words = line
                if line.startswith("sd_blender: ") and not self._error:
                    self._error = line.removeprefix("sd_blender: ")
        return_code = self._process.wait()
        with contextlib.suppress(OSError):  # a cancel line it never read stays unsent
            self._process.stdin.close()
        self._process_ended.set()
        follower.join()  # its last count and read done before the folder goes and the state says ended
        if self.temporary_folder:
            shutil.rmtree(self.temporary_folder, ignore_errors=True)
        with self._lock:
            if return_code == 0:
                self._state = DONE
            else:
                self._state = CANCELLED if self._cancel_requested else FAILED


def listen_for_cancel(stream):
    """Interrupt the main thread as Ctrl-C does (KeyboardInterrupt) once `stream`, the command's
    standard input, brings the line CANCEL_LINE; listened to on a thread of its own. Python must
    handle SIGINT (signal.default_int_handler), else the interrupt does nothing."""
    def listen():
        for line in stream:
            if line.strip() == CANCEL_LINE:
                interrupt_main_thread()
                return

    threading.Thread(target=listen, name="sd_blender cancel", daemon=True).start()


def interrupt_main_thread():
    if hasattr(signal, "pthread_kill"):  # a SIGINT to the main thread wakes it from a sleep or a wait
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    else:  # Windows: raised at the main thread's next Python step (the command line's waits poll)
        _thread.interrupt_main()
