"""Checks a parser script against the script contract before it is accepted.

Every entry point (admin, API, CLI) uploads through `validate_script`, so a
script is refused the same way everywhere, with the line and the reason.
"""

import ast
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

from runner import addresses, modules
from runner.restricted import DENIED_MODULES, policy_errors

MAX_SCRIPT_BYTES = 256 * 1024
MAX_PROBLEMS = 50
TOO_DEEP = "nests too deeply to be checked (a very long expression, or blocks deep in blocks): split it up"


@dataclass(frozen=True)
class Problem:
    line: int | None
    reason: str

    def __str__(self):
        return f"line {self.line}: {self.reason}" if self.line else self.reason


def validate_script(*, filename, content, size=None, restricted=False):
    """Return the problems of a script (empty when it is acceptable).

    `size` is the upload's full size when `content` holds only its first bytes;
    `restricted` adds the refusals of the RestrictedPython policy.
    """
    if not filename.endswith(".py"):
        return [Problem(None, f"the script must be a .py file, not {filename!r}")]
    size = len(content) if size is None else size
    if size > MAX_SCRIPT_BYTES:
        return [Problem(None, f"the script is {size} bytes; the limit is {MAX_SCRIPT_BYTES} bytes (256 KiB)")]
    try:
        source = content.decode("utf-8")
    except UnicodeDecodeError as error:
        line = content[: error.start].count(b"\n") + 1
        return [Problem(line, "the script is not valid UTF-8 text")]
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as error:
        return [Problem(error.lineno, f"syntax error: {error.msg}")]
    except ValueError as error:  # source with NUL bytes
        return [Problem(None, f"the script cannot be compiled: {error}")]
    except (RecursionError, MemoryError):
        return [Problem(None, f"the script {TOO_DEEP}")]
    problems = check_parse_function(tree) + check_imports(tree, restricted=restricted)
    if restricted:
        problems += check_restricted(source, filename)
    problems.sort(key=lambda problem: problem.line or 0)
    if len(problems) > MAX_PROBLEMS:  # a reader wants the first few; thousands would only weigh on the answer
        problems[MAX_PROBLEMS:] = [Problem(None, f"and {len(problems) - MAX_PROBLEMS} more problems")]
    return problems


def check_restricted(source, filename):
    problems = []
    try:
        errors = policy_errors(source, filename)
    except (RecursionError, MemoryError):  # RestrictedPython's compiler recurses deeper than Python's own
        return [Problem(None, f"restricted mode: the script {TOO_DEEP}")]
    for error in errors:
        match = re.match(r"Line (\d+): (.*)", error)
        line, reason = (int(match.group(1)), match.group(2)) if match else (None, error)
        problems.append(Problem(line, f"restricted mode: {reason}"))
    return problems


def check_parse_function(tree):
    functions = [
        node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "parse"
    ]
    if not functions:
        return [Problem(None, "the script must define a top-level function parse()")]
    parse = functions[-1]
    if isinstance(parse, ast.AsyncFunctionDef):
        return [Problem(parse.lineno, "parse() must be a plain function, not async")]
    arguments = parse.args
    positional = arguments.posonlyargs + arguments.args
    required = [arg.arg for arg in positional[: len(positional) - len(arguments.defaults)]]
    keyword_only = zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True)
    required += [arg.arg for arg, default in keyword_only if default is None]
    if required:
        return [Problem(parse.lineno, f"parse() must take no required arguments, but requires {', '.join(required)}")]
    return []


def check_imports(tree, *, restricted=False):
    problems = []
    allowed = allowed_modules() - (DENIED_MODULES if restricted else frozenset())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                problems.append(Problem(node.lineno, "relative imports are not allowed: a script is a single file"))
                continue
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top not in allowed:
                libraries = ", ".join(sorted(sandbox_modules()))
                reason = f"module {top!r} is not allowed: use the standard library or {libraries}"
                problems.append(Problem(node.lineno, reason))
    return problems


def allowed_modules():
    return modules.allowed_modules(settings.SANDBOX_REQUIREMENTS)


def sandbox_modules():
    """Top-level modules of the libraries in sandbox-image/requirements.in."""
    return modules.sandbox_modules(settings.SANDBOX_REQUIREMENTS)


def validate_webhook_url(url):
    """Refuse a webhook URL whose destination is not on the public internet, saying why.

    The scheme must be http or https and the URL must name a host. The host is resolved once,
    and refused if it does not resolve or if any of its addresses is refused by `runner.addresses`
    (loopback, private, link-local, this host's own...) outside `settings.WEBHOOK_ALLOWED_NETWORKS`,
    or inside `settings.REFUSED_NETWORKS`. Delivery checks again (parseq/alerts/services.py): a name
    may resolve elsewhere later.
    """
    if not url:
        return
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as error:  # an unclosed [, a port that is not a number, a host that is no host
        raise ValidationError(f"The webhook URL cannot be read: {error}.") from None
    if parts.scheme not in WEBHOOK_DEFAULT_PORTS:
        raise ValidationError(f"A webhook URL must start with http:// or https://, not {parts.scheme or url!r}.")
    if not host:
        raise ValidationError("A webhook URL must name a host.")
    try:
        addresses.resolve(
            host,
            port or WEBHOOK_DEFAULT_PORTS[parts.scheme],
            allowed=settings.WEBHOOK_ALLOWED_NETWORKS,
            refused=settings.REFUSED_NETWORKS,
        )
    except addresses.Unresolvable as unresolvable:
        raise ValidationError(f"The webhook URL's host cannot be checked: {unresolvable}.") from None
    except addresses.Refused as refused:
        raise ValidationError(
            f"Webhooks go only to the public internet: {refused} "
            "(an operator can allow a network with PARSEQ_WEBHOOK_ALLOWED_NETWORKS)."
        ) from None


WEBHOOK_DEFAULT_PORTS = {"http": 80, "https": 443}
