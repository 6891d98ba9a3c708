"""Try a parser script locally: `python -m runner SCRIPT.py --out DIR [--timeout S]`.

Writes the result files, or error.txt, into DIR and prints the script's log.
Exit status: 0 when the script succeeded, 1 when it failed, 2 on usage errors.
"""

import argparse
import os
import sys
import tempfile

from runner import Limits, best_backend, run_script

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PYTHON = os.path.join(REPOSITORY, ".venv-sandbox", "bin", "python")


def main(argv=None):
    arguments = parse_arguments(argv)
    if not os.path.isfile(arguments.script):
        print(f"error: no such script: {arguments.script}", file=sys.stderr)
        return 2
    os.makedirs(arguments.out, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".parseq-", dir=arguments.out)
    try:
        outcome = run_script(
            arguments.script,
            staging,
            python=arguments.python,
            backend=arguments.backend,
            limits=Limits(wall_time=arguments.timeout),
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
    parser.add_argument(
        "--python",
        default=os.environ.get("PARSEQ_SANDBOX_PYTHON") or default_python(),
        help="interpreter to run the script with (default: the sandbox environment's)",
    )
    arguments = parser.parse_args(argv)
    arguments.backend = arguments.backend or best_backend()
    return arguments


def default_python():
    return DEFAULT_PYTHON if os.path.exists(DEFAULT_PYTHON) else sys.executable


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
