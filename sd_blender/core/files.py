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
import struct

# Blender saving to a temporary name writes NAME@ first: those are leftovers too.
_PARTIAL_NAME = re.compile(r"\..+\.(?P<pid>\d+)-[0-9a-f]{8}\.part@?")
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_SEEK_TABLE_MAGIC = struct.pack("<I", 0x8F92EAB1)  # zstd's seekable format, which compressed .blend files use
_SKIPPABLE_FRAME_MAGIC = struct.pack("<I", 0x184D2A5E)
# How many zero bytes follow the code of the closing ENDB block, by the header's 8th byte: 32- or
# 64-bit pointers in .blend files up to Blender 4.x ("BLENDER_v", "BLENDER-v"), 5.x's "BLENDER17-01v".
_ENDB_HEADER_RESTS = {b"_": 16, b"-": 20, b"1": 28}


def partial_path(path):
    """The temporary name a file is written under before it is renamed to path."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{os.getpid()}-{secrets.token_hex(4)}.part")


def write_whole(path, data):
    """Write bytes to path: under a temporary name, synced, then renamed into place."""
    partial = partial_path(path)
    try:
        with open(partial, "xb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        remove_if_there(partial)
        raise


def remove_if_there(path):
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
            remove_if_there(os.path.join(folder, name))
            cleared.append(name)
    return cleared


def _compressed_blend_is_whole(file, size):
    """A seekable zstd stream is whole when its closing seek table adds up to the file's size."""
    if size < 17:
        return False
    file.seek(size - 9)
    frames, descriptor, magic = struct.unpack("<IB4s", file.read(9))
    entry_size = 12 if descriptor & 0x80 else 8
    table_size = 8 + frames * entry_size + 9
    if magic != _SEEK_TABLE_MAGIC or table_size > size:
        return False
    file.seek(size - table_size)
    header, frame_size = struct.unpack("<4sI", file.read(8))
    entries = file.read(frames * entry_size)
    compressed = sum(struct.unpack_from("<I", entries, offset)[0] for offset in range(0, len(entries), entry_size))
    return header == _SKIPPABLE_FRAME_MAGIC and frame_size == table_size - 8 and compressed + table_size == size


def is_whole_blend(path):
    """Whether path is a .blend file that ends where Blender ends one: its closing ENDB block
    (zero-filled), or, compressed, a seek table that accounts for every byte."""
    try:
        with open(path, "rb") as file:
            start = file.read(8)
            size = file.seek(0, 2)
            if start[:4] == _ZSTD_MAGIC:
                return _compressed_blend_is_whole(file, size)
            file.seek(max(0, size - 36))
            tail = file.read()
    except OSError:
        return False
    end = tail.rfind(b"ENDB")
    rest = tail[end + 4:]
    expected = _ENDB_HEADER_RESTS.get(start[7:8]) if start[:7] == b"BLENDER" else None
    return end >= 0 and len(rest) == expected and not rest.strip(b"\0")
