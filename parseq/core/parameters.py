"""What a run may be given beside its parser's settings (API `run/` body, the admin's "Run with…"): variables
added to its parser's for that run only, and a timeout. One set of rules for every entry point.
"""

from django.conf import settings
from django.core.exceptions import ValidationError

from parseq.core.environment import MASK, name_problem

MAX_VARIABLES = 50
# Each value goes through execve (which refuses a string over 128 KiB) as the sandbox starts.
MAX_VALUE_CHARS = 32 * 1024


def run_parameters(*, environment=None, timeout=None):
    """The parameters as a run keeps them, {"environment": {...}, "timeout": s} with what was given;
    raises ValidationError({"environment" or "timeout": [problems]}).
    """
    problems = {}
    if environment is not None and (environment_problems := _environment_problems(environment)):
        problems["environment"] = environment_problems
    if timeout is not None and (timeout_problem := _timeout_problem(timeout)):
        problems["timeout"] = [timeout_problem]
    if problems:
        raise ValidationError(problems)
    parameters = {}
    if environment:
        parameters["environment"] = dict(environment)
    if timeout is not None:
        parameters["timeout"] = timeout
    return parameters


def _environment_problems(environment):
    if not isinstance(environment, dict):
        return ['give the variables as an object, {"NAME": "value"}']
    if len(environment) > MAX_VARIABLES:
        return [f"at most {MAX_VARIABLES} variables a run"]
    problems = []
    for name, value in environment.items():
        if problem := name_problem(name):
            problems.append(problem)
        elif not isinstance(value, str):
            problems.append(f"{name}: the value must be a string")
        elif value == MASK:
            problems.append(f"{name}: give the value itself, not the mask")
        elif "\0" in value:
            problems.append(f"{name}: the value cannot hold a NUL character")
        elif len(value) > MAX_VALUE_CHARS:
            problems.append(f"{name}: the value is longer than {MAX_VALUE_CHARS} characters")
    return problems


def _timeout_problem(timeout):
    if isinstance(timeout, bool) or not isinstance(timeout, int):
        return "the timeout must be a whole number of seconds"
    if not 1 <= timeout <= settings.MAX_RUN_TIMEOUT:
        return f"the timeout must be between 1 and {settings.MAX_RUN_TIMEOUT} seconds"
    return None
