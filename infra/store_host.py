"""Where the embedded store lives on this machine: its folder in the stack's data dir, whether a store
holds that folder now (its lock), and free local ports for it (and for tests and benches)."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

STORE_SUBDIR = "seaweedfs"  # the store's folder in a stack's data dir
LOCK_FILE = "soundstage-store.lock"  # held while a store runs on the data dir: one store per dir


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on `port` now. SO_REUSEADDR as Go servers set it: a port whose
    old connections linger in TIME_WAIT (just after a restart) is free to them."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def default_data_dir() -> Path:
    """Where soundstage keeps its data: `$XDG_DATA_HOME/soundstage`, else `~/.local/share/soundstage`."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "soundstage"


def store_dir(data_dir: Path | None = None) -> Path:
    """The embedded store's folder in the stack data dir `data_dir` (default: `default_data_dir()`)."""
    return (data_dir or default_data_dir()).expanduser() / STORE_SUBDIR


def store_running(folder: Path) -> bool:
    """Whether an embedded store runs on `folder` now (it holds the folder's lock while it runs)."""
    try:
        with (folder / LOCK_FILE).open("a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # closing the file releases it again
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False
