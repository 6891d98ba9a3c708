"""Which modules a script may import, and which a warm start preloads: the worker's and `python -m runner`'s alike.

Both come from the sandbox's top-level requirements (sandbox-image/requirements.in), where each line may
name the modules it provides with "# import: a, b" ("# import: -" for none).
"""

import functools
import re
import sys

# Besides the sandbox's libraries, what a warm start's zygote imports because scrapers use it most.
WARM_EXTRA_MODULES = ("PIL.Image", "csv", "datetime", "html.parser", "json", "lxml.html", "re", "urllib.parse")


@functools.cache
def sandbox_modules(requirements_path):
    """Top-level modules of the libraries in the sandbox's requirements file."""
    with open(requirements_path, encoding="utf-8") as requirements:
        return frozenset(modules_of_requirements(requirements.read()))


def allowed_modules(requirements_path):
    """The standard library and the sandbox's libraries (restricted mode refuses some of them: runner.restricted)."""
    return sys.stdlib_module_names | sandbox_modules(requirements_path)


def warm_preload(requirements_path):
    return sorted({*sandbox_modules(requirements_path), *WARM_EXTRA_MODULES})


def modules_of_requirements(text):
    modules = set()
    for raw_line in text.splitlines():
        requirement, _, comment = raw_line.partition("#")
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        if not match:
            continue
        declared = re.match(r"\s*import:\s*(.+)", comment)
        if declared:
            modules.update(name.strip() for name in declared.group(1).split(",") if name.strip() not in ("", "-"))
        else:
            modules.add(match.group(1).lower().replace("-", "_").replace(".", "_"))
    return modules
