"""Files that survive a crash, a full disk or a second process: atomic writes, JSON
read back with checks, and the lock of a run folder.

Every file a run writes goes to a temporary name beside it (``.partial-<name>``) and
replaces the real one only once it is complete, so an interruption or a full disk
leaves the previous good file (or none); the temporary file is removed on failure,
and a failure is one ``UserError`` line naming the file (for a full disk: the space
needed, where known, and the space free). Files are flushed and closed before the
rename; they are not fsynced, so this protects against crashes of the process, not
against a power cut.

This module does not import TensorFlow.
"""

import contextlib
import errno
import json
import math
import os
import shutil
import socket
from pathlib import Path

from .errors import UserError

PARTIAL = ".partial-"
LOCK = ".lock"


def partial_path(path):
    """The temporary name of ``path`` while it is written (same folder, same suffix)."""
    path = Path(path)
    return path.with_name(PARTIAL + path.name)


def megabytes(count):
    return f"{count / 1e6:.1f} MB"


def write_error(path, error, needed=None):
    """The one-line message of an OSError while writing ``path``."""
    path = Path(path)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = f"{megabytes(shutil.disk_usage(path.parent).free)} free"
        except OSError:
            free = "free space unknown"
        space = f"needs about {megabytes(needed)}, {free}" if needed else free
        return (f"no space left on the disk to write {path} ({space}); free some space, "
                "then run the same command with --resume")
    return f"cannot write {path}: {error.strerror or error}"


@contextlib.contextmanager
def atomic_path(path, needed=None):
    """Yields the temporary path to write ``path`` to; once the block ends, it replaces
    ``path``. On an OSError the temporary file is removed and a UserError names
    ``path``; on any other exception (Ctrl-C included) it is removed too."""
    path = Path(path)
    temporary = partial_path(path)
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise UserError(write_error(path, error, needed)) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text(path, text):
    data = text.encode()
    with atomic_path(path, len(data)) as temporary, open(temporary, "wb") as handle:
        handle.write(data)


def write_json(path, values):
    """``values`` as indented JSON; NaN and infinities are refused (they are not JSON)."""
    try:
        text = json.dumps(values, indent=2, allow_nan=False) + "\n"
    except ValueError:
        raise UserError(f"refusing to write a non-finite number to {path}: "
                        f"{_non_finite(values)}") from None
    write_text(path, text)


def _non_finite(values, where=""):
    if isinstance(values, dict):
        for key, value in values.items():
            found = _non_finite(value, f"{where}.{key}" if where else str(key))
            if found:
                return found
    elif isinstance(values, (list, tuple)):
        for number, value in enumerate(values):
            found = _non_finite(value, f"{where}[{number}]")
            if found:
                return found
    elif isinstance(values, float) and not math.isfinite(values):
        return f"{where} = {values}"
    return ""


def _refuse_constant(name):
    raise ValueError(f"{name} is not a number JSON allows")


_JSON_KINDS = {list: "a list", str: "a string", int: "a number", float: "a number",
               bool: "true or false", type(None): "null"}


def read_json_object(path, advice, missing=None):
    """The JSON object in ``path``. A UserError naming the file where it is missing
    (``missing``, or "missing <path>; <advice>"), unreadable, or damaged: not JSON, not
    an object, or holding NaN or an infinity, which Python's json would read but are
    not JSON and would turn into "nan" numbers (then followed by ``advice``)."""
    path = Path(path)
    try:
        values = json.loads(path.read_text(), parse_constant=_refuse_constant)
    except FileNotFoundError:
        raise UserError(missing or f"missing {path}; {advice}") from None
    except ValueError as error:  # not JSON, NaN, or not UTF-8 text
        raise UserError(f"{path} is damaged ({str(error).splitlines()[0]}); {advice}") from None
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}") from None
    if not isinstance(values, dict):
        raise UserError(f"{path} is damaged (it holds {_JSON_KINDS[type(values)]}, not a "
                        f"JSON object); {advice}")
    return values


# ------------------------------------------------------------------ the lock


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class RunLock:
    """An advisory lock on a run folder while a process trains in it: the file
    ``.lock`` holds the process id and host. A lock left by a process of this host
    that no longer runs is taken over, with a note; a live one (or one of another
    host, which cannot be checked) is a UserError."""

    def __init__(self, run_dir, log=None):
        self.path = Path(run_dir) / LOCK
        self.log = log
        self.held = False

    def acquire(self):
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
        for _ in range(2):
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            except OSError as error:
                raise UserError(write_error(self.path, error)) from None
            with os.fdopen(handle, "w") as stream:
                stream.write(record + "\n")
            self.held = True
            return self
        raise UserError(f"cannot lock {self.path.parent}: another process keeps taking "
                        "its lock")

    def _take_over_if_stale(self):
        try:
            owner = json.loads(self.path.read_text())
            pid, host = int(owner["pid"]), str(owner["host"])
        except FileNotFoundError:
            return  # released meanwhile: try again
        except (OSError, ValueError, KeyError, TypeError):
            pid, host = None, None  # a lock file cut short: its writer died at once
        if host not in (None, socket.gethostname()):
            raise UserError(
                f"{self.path.parent} is locked by process {pid} on host {host}; if no "
                f"such process trains in it, delete {self.path}")
        if pid is not None and _running(pid):
            raise UserError(
                f"{self.path.parent} is being trained by process {pid} on this host; wait "
                "for it to end (or stop it) before running the same command")
        if self.log:
            self.log(f"{self.path.parent}: taking over the lock of process {pid}, which no "
                     "longer runs")
        self.path.unlink(missing_ok=True)

    def release(self):
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
