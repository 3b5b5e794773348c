"""Fault injection for tests: a Python started with this folder on PYTHONPATH stalls in the
middle of writing a chosen file, so that a kill -9 lands mid-write every time, not by chance.

With SD_BLENDER_STALL_WRITES=TEXT, the first write to a file opened for writing whose name
contains TEXT writes half its bytes to disk, creates the file SD_BLENDER_STALL_SIGNAL, and then
waits forever (for the test to kill the process). Without the variable nothing changes.
"""
import builtins
import os
import time

_TARGET = os.environ.get("SD_BLENDER_STALL_WRITES")
_SIGNAL = os.environ.get("SD_BLENDER_STALL_SIGNAL", "")


class _StallingFile:
    def __init__(self, file):
        self._file = file

    def write(self, data):
        self._file.write(data[: len(data) // 2])
        self._file.flush()
        os.fsync(self._file.fileno())
        with _open(_SIGNAL, "w"):
            pass
        while True:
            time.sleep(3600)

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        return self._file.__exit__(*exception)

    def __getattr__(self, name):
        return getattr(self._file, name)


def _stalling_open(file, mode="r", *arguments, **keywords):
    opened = _open(file, mode, *arguments, **keywords)
    writing = any(letter in mode for letter in "wxa")
    if writing and isinstance(file, (str, os.PathLike)) and _TARGET in os.path.basename(os.fspath(file)):
        return _StallingFile(opened)
    return opened


if _TARGET:
    _open = builtins.open
    builtins.open = _stalling_open
