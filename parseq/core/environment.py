"""A parser's environment variables as users edit them: `KEY=value` lines, values masked when shown."""

import re
from urllib.parse import quote, quote_plus

MASK = "********"
# Shorter values are words like "true" or "ru", not secrets: masking them would garble the text instead.
MASKED_VALUE_MIN_CHARS = 6
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Set by the sandbox itself, or able to change how the interpreter or the loader behaves.
RESERVED = {"PATH", "HOME", "TMPDIR", "LANG", "TZ", "PWD", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES"}
MAX_NAME_CHARS = 256
RESERVED_PREFIXES = ("PYTHON", "LD_", "LC_")


def masked_text(environment):
    return "\n".join(f"{name}={MASK}" for name in sorted(environment))


def name_problem(name):
    if len(name) > MAX_NAME_CHARS:
        return f"a variable's name is at most {MAX_NAME_CHARS} characters"
    if not NAME.match(name):
        return f"{name!r} is not a valid variable name"
    if name in RESERVED or name.startswith(RESERVED_PREFIXES):
        return f"{name} is set by the sandbox and cannot be changed"
    return None


def masked(environment):
    return dict.fromkeys(sorted(environment), MASK)


def mask_values(text, *, environment):
    """`text` with each value of `environment` (of 6 characters or more) replaced by the mask, as is or URL-encoded.

    A run's error and log are read by people who may not read the variables (README: Permissions),
    and libraries print URLs, query strings included, in their errors.
    """
    values = [str(value) for value in (environment or {}).values() if len(str(value)) >= MASKED_VALUE_MIN_CHARS]
    forms = {form for value in values for form in (value, quote(value, safe=""), quote_plus(value))}
    for form in sorted(forms, key=len, reverse=True):  # the longest first: no half of a value is left
        text = text.replace(form, MASK)
    return text


def merge_environment(variables, *, previous):
    """Return ({name: value}, [problems]) for variables given as a mapping; a masked value keeps the previous."""
    environment, problems = {}, []
    for name, value in variables.items():
        if problem := name_problem(name):
            problems.append(problem)
        elif not isinstance(value, str):
            problems.append(f"{name}: the value must be a string")
        elif value == MASK and name not in previous:
            problems.append(f"{name} has no value yet: give it instead of the mask")
        else:
            environment[name] = previous[name] if value == MASK else value
    return environment, problems


def parse_environment_text(text, *, previous):
    """Return ({name: value}, [problems]); a value left as the mask keeps the previous one."""
    environment, problems = {}, []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        name = name.strip()
        if not equals:
            problems.append(f"line {number}: expected NAME=value")
        elif problem := name_problem(name):
            problems.append(f"line {number}: {problem}")
        elif name in environment:
            problems.append(f"line {number}: {name} is set twice")
        elif value == MASK:
            if name not in previous:
                problems.append(f"line {number}: {name} has no value yet: type it instead of the mask")
            else:
                environment[name] = previous[name]
        else:
            environment[name] = value
    return environment, problems
