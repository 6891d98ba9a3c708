"""What a worker process leaves on disk is named after it, so that the next worker can tell when its owner is gone.

A name carries `<pid>+<place>+`: the process id, and where that id means something (the host and
process id namespace, hashed to 6 hex digits: these names end up in socket paths, which are short).
Containers sharing a temporary directory have process ids of their own; a name from another place is
never judged by this one's process ids.
"""

import hashlib
import os
import socket


def pid_namespace() -> str:
    """This process's process id namespace (its inode number): process ids mean something only within it."""
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:[").removesuffix("]")
    except OSError:
        return "-"


def place() -> str:
    """Where this process's id means something: its host and process id namespace, in 6 hex digits."""
    return hashlib.sha256(f"{socket.gethostname()}:{pid_namespace()}".encode()).hexdigest()[:6]


def owner_tag() -> str:
    """`<pid>+<place>+`, to put after a name's prefix."""
    return f"{os.getpid()}+{place()}+"


def owner_is_gone(rest: str) -> bool:
    """Whether the name whose part after its prefix is `rest` is of a process of this place that has exited."""
    owner, where, *_ = [*rest.split("+"), "", ""]
    return owner.isdigit() and where == place() and not os.path.exists(f"/proc/{owner}")
