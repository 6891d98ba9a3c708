"""How much a run costs on top of the bare interpreter, per backend, plain and restricted.

Usage: .venv/bin/python bench/runner_overhead.py [RUNS]   (or `make bench`)
Prints medians and p95 in milliseconds; measures, asserts nothing.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import runner  # after the path above

PYTHON = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".venv-sandbox", "bin", "python")
TRIVIAL = "def parse():\n    return {'a.txt': b'a'}\n"
SCRAPER = "import requests, bs4\ndef parse():\n    return {'a.txt': b'a'}\n"
MODULES = ["bs4", "requests"]


def summary(seconds):
    seconds = sorted(seconds)
    p95 = seconds[max(0, round(len(seconds) * 0.95) - 1)]
    return f"{statistics.median(seconds) * 1000:6.0f} {p95 * 1000:6.0f}"


def bare(code, runs):
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([PYTHON, "-I", "-c", code], check=True)
        times.append(time.perf_counter() - started)
    return times


def through_runner(source, backend, restricted, runs):
    with tempfile.TemporaryDirectory() as tempdir:
        script = os.path.join(tempdir, "parser.py")
        with open(script, "w") as file:
            file.write(source)
        times = []
        for _ in range(runs):
            out = tempfile.mkdtemp(dir=tempdir)
            started = time.perf_counter()
            outcome = runner.run_script(
                script, out, python=PYTHON, backend=backend, restricted_modules=MODULES if restricted else None
            )
            times.append(time.perf_counter() - started)
            if not outcome.ok:
                raise SystemExit(f"{backend}: {outcome.error}")
        return times


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    print(f"{os.cpu_count()} cores, {runs} runs each; milliseconds: median p95")
    print(f"{'bare python -I, trivial':42} {summary(bare('pass', runs))}")
    print(f"{'bare python -I, import requests, bs4':42} {summary(bare('import requests, bs4', runs))}")
    backends = ["subprocess", "bwrap"] if runner.bwrap_works() else ["subprocess"]
    for backend in backends:
        for label, source in (("trivial", TRIVIAL), ("requests+bs4", SCRAPER)):
            for restricted in (False, True):
                name = f"{backend}, {label}{', restricted' if restricted else ''}"
                print(f"{name:42} {summary(through_runner(source, backend, restricted, runs))}")


if __name__ == "__main__":
    main()
