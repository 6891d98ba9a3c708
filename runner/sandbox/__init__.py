"""The code that runs inside the sandbox, in the sandbox's own interpreter (.venv-sandbox, or the image's).

That interpreter never imports this package: it runs these files by path (`python -I -B bootstrap.py ...`,
`zygote.py`, `self_jail.py`), and they import only the standard library, the sandbox's own libraries
(RestrictedPython) and each other as top-level modules (zygote.py puts this directory on sys.path;
bootstrap.py loads restricted.py by path). A jail binds each file to /sandbox/<name>.py. So nothing here
may import from `runner`: tests/runner/test_imports.py checks it.

The worker imports this package for the paths below and for a few constants of self_jail.py.
"""

import os

DIRECTORY = os.path.dirname(os.path.abspath(__file__))
BOOTSTRAP = os.path.join(DIRECTORY, "bootstrap.py")
RESTRICTED_POLICY = os.path.join(DIRECTORY, "restricted.py")
SELF_JAIL = os.path.join(DIRECTORY, "self_jail.py")
ZYGOTE = os.path.join(DIRECTORY, "zygote.py")
