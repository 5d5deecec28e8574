"""Output folders: checked before any work, locked while a process writes them, reusable after a
failed start.

* :func:`check_output_dir` - the folder (or the folder it will be made in) must be a writable
  directory; a file in the way, a read-only file system or a missing permission is one line, before
  any data is read.
* :class:`OutputLock` - ``<folder>/.lock`` holds the PID of the process writing the folder and its
  start time (``/proc/<pid>/stat``; created atomically with ``O_EXCL``); a second process is refused
  while that process lives; a lock left by a killed process is taken over, also when its PID was
  reused by another process (another start time; for a lock without one, a process whose command
  line does not name otreweight).
* :func:`has_progress` - whether a folder holds any trained stage (a checkpoint or a result); a
  folder with a config but no progress (a start that failed) may be started afresh.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

from ._errors import OTReweightError


def _os_reason(err: OSError) -> str:
    return err.strerror or type(err).__name__


def check_output_dir(path, what: str = "output_dir") -> Path:
    """Create ``path`` (with parents) and make sure files can be written in it; one-line errors."""
    p = Path(path).expanduser()
    for parent in [p, *p.parents]:
        if parent.exists():
            if not parent.is_dir():
                where = "is" if parent == p else f"lies below {parent}, which is"
                raise OTReweightError(f"{what} {p} {where} a file, not a folder; choose another {what}")
            break
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".otreweight-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OTReweightError(f"{what} {p} is not writable ({_os_reason(err)}); choose a folder you can write to") from None
    return p


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, ``/proc/<pid>/stat`` field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": field 3 onwards
    return fields[19] if len(fields) > 19 else None


def _holds_lock(pid: int, start: str | None) -> bool:
    """Whether the process that wrote a lock (``pid``, started at ``start``) is still running."""
    if not _pid_alive(pid):
        return False
    proc = Path(f"/proc/{pid}")
    if not proc.is_dir():
        return True  # no /proc (macOS): a live PID is trusted
    if start:
        return _start_time(pid) == start  # another start time: the PID was reused
    try:  # a lock without a start time: an otreweight process, or a reused PID
        return b"otreweight" in (proc / "cmdline").read_bytes()
    except OSError:
        return True


class OutputLock:
    """``with OutputLock(folder):`` - the folder is written by this process alone."""

    def __init__(self, folder, what: str = "run") -> None:
        self.path, self.what, self.held = Path(folder) / ".lock", what, False

    def __enter__(self) -> "OutputLock":
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    parts = self.path.read_text().split()
                    pid, start = int(parts[0]) if parts else 0, parts[1] if len(parts) > 1 else None
                except (OSError, ValueError):
                    pid, start = 0, None
                if pid and pid != os.getpid() and _holds_lock(pid, start):
                    raise OTReweightError(
                        f"another otreweight process (PID {pid}) is writing {self.path.parent}; wait for it to "
                        f"finish or stop it (a lock whose process has ended is taken over automatically)"
                    ) from None
                try:  # stale (its process is gone, or the PID now belongs to another one) or ours: take it over
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            except OSError as err:
                raise OTReweightError(f"cannot create {self.path} ({_os_reason(err)}); check the folder") from None
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()} {_start_time(os.getpid()) or ''}".strip())
            self.held = True
            return self
        raise OTReweightError(f"cannot take the lock {self.path}; remove it if no otreweight process is running")

    def __exit__(self, *exc) -> None:
        if self.held:
            try:
                self.path.unlink()
            except OSError:
                pass
            self.held = False


def has_progress(folder) -> bool:
    """Whether a run folder holds a trained stage (``checkpoint.pt``, a saved model or ``final.json``)."""
    p = Path(folder)
    if not p.is_dir():
        return False
    return any(any((d / f).exists() for f in ("checkpoint.pt", "model.json", "best.pt", "final.json"))
               for d in p.iterdir() if d.is_dir())


def os_error_line(err: OSError) -> str:
    """One line for an OS error met while working (disk full, permission, read-only, ...)."""
    where = f" ({err.filename})" if getattr(err, "filename", None) else ""
    hint = {errno.ENOSPC: "free disk space, then continue with --resume",
            errno.EACCES: "fix the permissions or choose another folder",
            errno.EROFS: "choose a folder on a writable file system",
            errno.ENOTDIR: "a path component is a file, not a folder"}.get(err.errno, "check the path")
    return f"{_os_reason(err)}{where}; {hint}"


__all__ = ["OutputLock", "check_output_dir", "has_progress", "os_error_line"]
