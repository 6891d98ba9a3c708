"""What a sandboxed run produced."""

import math
from dataclasses import dataclass, field

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Bounds of one run. Breaking one ends the run in error with a reason naming it.

    The parent enforces wall time, log and result limits; the child applies the
    others to itself as rlimits before the script's code runs. `processes` only
    holds where the sandbox has a user id of its own (see README: Isolation).
    """

    wall_time: float = 300
    cpu_time: int | None = None  # seconds; None: as many as the wall time
    memory_bytes: int = 1024 * MiB
    processes: int = 64
    open_files: int = 256
    file_bytes: int = 100 * MiB
    # All the files of a run together (bwrap: HOME, /tmp and /dev/shm, each a tmpfs this size).
    disk_bytes: int = 200 * MiB
    log_bytes: int = 1 * MiB
    result_bytes: int = 100 * MiB
    result_files: int = 1000

    @property
    def cpu_seconds(self) -> int:
        return self.cpu_time or max(1, math.ceil(self.wall_time))


@dataclass(frozen=True)
class ResultFile:
    name: str
    size: int


# Why a run ended; only COMPLETED has files.
COMPLETED = "completed"
SCRIPT_ERROR = "script_error"
TIMEOUT = "timeout"
LIMIT_EXCEEDED = "limit_exceeded"
PROTOCOL_ERROR = "protocol_error"
SANDBOX_ERROR = "sandbox_error"
CANCELLED = "cancelled"


@dataclass
class Outcome:
    status: str
    log: str = ""
    error: str = ""
    files: list[ResultFile] = field(default_factory=list)
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == COMPLETED
