"""What a sandboxed run produced."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limits:
    """Bounds of one run. Breaking one ends the run in error with a reason naming it."""

    wall_time: float = 300
    log_bytes: int = 1024 * 1024
    result_bytes: int = 100 * 1024 * 1024
    result_files: int = 1000


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


@dataclass
class Outcome:
    status: str
    log: str = ""
    error: str = ""
    files: list = field(default_factory=list)
    duration: float = 0.0

    @property
    def ok(self):
        return self.status == COMPLETED
