"""Try a parser script locally: `python -m runner SCRIPT.py --out DIR [options]`.

It runs the script as a worker would with the default settings: restricted mode on, the same limits,
the same jail, a warm start where the backend has one. Options change what a parser's settings
change on the server (README: Trying a script locally). Writes the result files, or error.txt, into
DIR and prints the script's log. Exit status: 0 when the script succeeded, 1 when it failed, 2 on
usage errors.
"""

import argparse
import ipaddress
import os
import sys
import tempfile

from runner import NO_BACKEND, WARM_BACKENDS, Limits, best_backend, run_script
from runner.modules import allowed_modules, warm_preload
from runner.restricted import policy_errors

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PYTHON = os.path.join(REPOSITORY, ".venv-sandbox", "bin", "python")
REQUIREMENTS = os.path.join(REPOSITORY, "sandbox-image", "requirements.in")


def main(argv=None):
    arguments = parse_arguments(argv)
    if not os.path.isfile(arguments.script):
        print(f"error: no such script: {arguments.script}", file=sys.stderr)
        return 2
    os.makedirs(arguments.out, exist_ok=True)
    refusals = [] if arguments.no_restricted else upload_refusals(arguments.script)
    if refusals:
        error = "refused by the restricted mode, as the server would refuse it at upload:\n" + "\n".join(refusals)
        with open(os.path.join(arguments.out, "error.txt"), "w", encoding="utf-8") as error_file:
            error_file.write(error + "\n")
        print(error, file=sys.stderr)
        return 1
    staging = tempfile.mkdtemp(prefix=".parseq-", dir=arguments.out)
    try:
        warm = arguments.backend in WARM_BACKENDS and not arguments.cold
        outcome = run_script(
            arguments.script,
            staging,
            python=arguments.python,
            backend=arguments.backend,
            limits=Limits(wall_time=arguments.timeout, memory_bytes=arguments.memory * 1024 * 1024),
            variables=dict(arguments.env),
            network=arguments.network,
            allowed_networks=arguments.allow_network,
            extra_ports=arguments.port,
            restricted_modules=None if arguments.no_restricted else allowed_modules(REQUIREMENTS),
            warm=warm,
            preload=warm_preload(REQUIREMENTS) if warm else (),
        )
        sys.stdout.write(outcome.log)
        error_path = os.path.join(arguments.out, "error.txt")
        if outcome.ok:
            for result_file in outcome.files:
                os.replace(os.path.join(staging, result_file.name), os.path.join(arguments.out, result_file.name))
            if os.path.exists(error_path):
                os.unlink(error_path)
            names = ", ".join(f"{f.name} ({f.size} bytes)" for f in outcome.files) or "no files"
            print(f"completed in {outcome.duration:.1f} s: {names}", file=sys.stderr)
            return 0
        with open(error_path, "w", encoding="utf-8") as error_file:
            error_file.write(outcome.error + "\n")
        print(f"{outcome.status}: {outcome.error}", file=sys.stderr)
        return 1
    finally:
        for name in os.listdir(staging):
            os.unlink(os.path.join(staging, name))
        os.rmdir(staging)


def upload_refusals(script):
    with open(script, encoding="utf-8", errors="replace") as file:
        source = file.read()
    try:
        return policy_errors(source, os.path.basename(script))
    except SyntaxError:
        return []  # the run reports it, with its traceback


def parse_arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m runner", description="Run a Parseq parser script in a sandbox.")
    parser.add_argument("script", help="the parser script, a .py file defining parse()")
    parser.add_argument("--out", required=True, help="directory for the result files (or error.txt)")
    parser.add_argument("--timeout", type=positive_number, default=300, help="wall-clock limit in seconds")
    parser.add_argument(
        "--backend",
        choices=["bwrap", "subprocess", "docker"],
        default=None,
        help="sandbox backend (default: bwrap where it works, else subprocess)",
    )
    parser.add_argument("--memory", type=memory_mb, default=1024, metavar="MB", help="the run's memory limit")
    parser.add_argument(
        "--no-restricted", action="store_true", help="run without restricted mode, as a parser with it off"
    )
    parser.add_argument("--network", choices=["internet", "none"], default="internet", help="the parser's network")
    parser.add_argument(
        "--env", type=variable, action="append", default=[], metavar="NAME=VALUE", help="a variable (repeatable)"
    )
    parser.add_argument(
        "--port", type=port, action="append", default=[], help="an egress port besides 80 and 443 (repeatable)"
    )
    parser.add_argument(
        "--allow-network",
        type=network,
        action="append",
        default=[],
        metavar="CIDR",
        help="let the script reach this network, refused by default (a test server on this machine)",
    )
    parser.add_argument("--cold", action="store_true", help="start a new interpreter instead of a warm start")
    parser.add_argument(
        "--python",
        default=os.environ.get("PARSEQ_SANDBOX_PYTHON") or default_python(),
        help="interpreter to run the script with (default: the sandbox environment's)",
    )
    arguments = parser.parse_args(argv)
    arguments.backend = arguments.backend or best_backend()
    if arguments.backend is None:
        parser.error(NO_BACKEND)
    return arguments


def default_python():
    return DEFAULT_PYTHON if os.path.exists(DEFAULT_PYTHON) else sys.executable


def memory_mb(text):
    value = int_of(text)
    if value < 64:
        raise argparse.ArgumentTypeError("must be at least 64 (MB), as on the server")
    return value


def port(text):
    value = int_of(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (1 to 65535)")
    return value


def int_of(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def variable(text):
    name, equals, value = text.partition("=")
    if not equals or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def network(text):
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def positive_number(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


if __name__ == "__main__":
    sys.exit(main())
