"""Files written whole or not at all.

Every file the add-on and the command line write goes first to a temporary file in the same
folder (`.NAME.PID-RANDOM.part`), which is renamed into place only once it is whole and on disk:
a process killed mid-write, a crash or a full disk leaves at most that temporary file, never a
broken file under the real name. `clear_leftovers` removes the temporary files of writers that
are gone.
"""
import os
import re
import secrets

_PARTIAL_NAME = re.compile(r"\..+\.(?P<pid>\d+)-[0-9a-f]{8}\.part")


def _partial_path(path):
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{os.getpid()}-{secrets.token_hex(4)}.part")


def write_whole(path, data):
    """Write bytes to path: under a temporary name, synced, then renamed into place."""
    partial = _partial_path(path)
    try:
        with open(partial, "xb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        _remove_if_there(partial)
        raise


def _remove_if_there(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _writer_is_gone(pid):
    if os.name != "posix":
        # No cheap liveness check without extra modules (os.kill(pid, 0) would signal the
        # process on Windows): another process's leftover is taken as gone.
        return pid != os.getpid()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def clear_leftovers(folder):
    """Remove the temporary files that writers killed mid-write left in folder; returns their names."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    cleared = []
    for name in names:
        match = _PARTIAL_NAME.fullmatch(name)
        if match and _writer_is_gone(int(match["pid"])):
            _remove_if_there(os.path.join(folder, name))
            cleared.append(name)
    return cleared
