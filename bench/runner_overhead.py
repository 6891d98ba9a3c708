"""How much a run costs on top of the bare interpreter, per backend, cold and warm, plain and restricted.

Usage: .venv/bin/python bench/runner_overhead.py [RUNS] [--out bench/results/runner_overhead.json]
       (or `make bench`)

Each row is a whole runner.run_script() call as a worker makes it (working directory, sandbox,
result files, clean-up) for a script that returns one small file; the bare rows run
`python -I -c CODE` with the same imports. "over bare" is the row's median minus the bare
median of the same script, and "x bare" their ratio. Rows alternate between configurations
round by round, so a busy moment of the machine spreads over all of them. Measures, asserts nothing.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPOSITORY)

import runner  # noqa: E402 - after the path above

PYTHON = os.path.join(REPOSITORY, ".venv-sandbox", "bin", "python")
SCRIPTS = {
    "trivial": ("pass", "def parse():\n    return {'a.txt': b'a'}\n"),
    "requests+bs4": ("import requests, bs4", "import requests, bs4\ndef parse():\n    return {'a.txt': b'a'}\n"),
}
MODULES = ["bs4", "requests"]
PRELOAD = ["PIL", "bs4", "lxml", "lxml.html", "requests"]  # as the worker's, from sandbox-image/requirements.in
WARM_UP = 3


def milliseconds(seconds):
    seconds = sorted(seconds)
    p95 = seconds[max(0, round(len(seconds) * 0.95) - 1)]
    return {"median": round(statistics.median(seconds) * 1000, 1), "p95": round(p95 * 1000, 1), "n": len(seconds)}


def bare(code):
    started = time.perf_counter()
    subprocess.run([PYTHON, "-I", "-c", code], check=True)
    return time.perf_counter() - started


def through_runner(script, workdir, *, backend, warm, restricted):
    out = tempfile.mkdtemp(dir=workdir)
    started = time.perf_counter()
    outcome = runner.run_script(
        script,
        out,
        python=PYTHON,
        backend=backend,
        restricted_modules=MODULES if restricted else None,
        warm=warm,
        preload=PRELOAD if warm else (),
    )
    elapsed = time.perf_counter() - started
    if not outcome.ok:
        raise SystemExit(f"{backend}: {outcome.error}")
    return elapsed


def docker_answers():
    """Whether a Docker engine answers and holds the sandbox image (`make images`)."""
    try:
        import docker

        docker.from_env(timeout=3).images.get(os.environ.get("PARSEQ_SANDBOX_IMAGE", "parseq-sandbox:latest"))
    except Exception:  # noqa: BLE001 - no SDK, no engine or no image: no docker row
        return False
    return True


def configurations():
    sandboxes = [("subprocess", False), ("subprocess", True)]
    if runner.bwrap_works():
        sandboxes += [("bwrap", False), ("bwrap", True)]
    if docker_answers():
        sandboxes += [("docker", False)]  # a container per run: there is no warm start under docker
    for label in SCRIPTS:
        yield (f"bare python -I, {label}", label, None, False, False)
        for backend, warm in sandboxes:
            for restricted in (False, True):
                name = f"{backend}{' warm' if warm else ''}, {label}{', restricted' if restricted else ''}"
                yield (name, label, backend, warm, restricted)


def measure(runs):
    rows = list(configurations())
    times = {row[0]: [] for row in rows}
    with tempfile.TemporaryDirectory() as workdir:
        scripts = {}
        for label, (_, source) in SCRIPTS.items():
            scripts[label] = os.path.join(workdir, f"{label.replace('+', '_')}.py")
            with open(scripts[label], "w") as file:
                file.write(source)
        for round_number in range(WARM_UP + runs):
            for name, label, backend, warm, restricted in rows:
                if backend is None:
                    elapsed = bare(SCRIPTS[label][0])
                else:
                    elapsed = through_runner(scripts[label], workdir, backend=backend, warm=warm, restricted=restricted)
                if round_number >= WARM_UP:
                    times[name].append(elapsed)
    results = []
    for name, label, backend, warm, restricted in rows:
        figures = milliseconds(times[name])
        base = milliseconds(times[f"bare python -I, {label}"])["median"]
        figures.update(
            name=name,
            script=label,
            backend=backend or "bare",
            warm=warm,
            restricted=restricted,
            over_bare_ms=round(figures["median"] - base, 1),
            ratio=round(figures["median"] / base, 2),
        )
        results.append(figures)
    return results


def table(results, machine):
    lines = [
        f"{machine['cores']} cores, {machine['python']}, {results[0]['n']} runs each; milliseconds",
        f"{'':44} {'median':>7} {'p95':>7} {'over bare':>10} {'x bare':>7}",
    ]
    for row in results:
        lines.append(
            f"{row['name']:44} {row['median']:7.1f} {row['p95']:7.1f} {row['over_bare_ms']:+10.1f} {row['ratio']:7.2f}"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("runs", nargs="?", type=int, default=30)
    parser.add_argument("--out", help="also write the figures as JSON here")
    arguments = parser.parse_args()
    machine = {"cores": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()}
    results = measure(arguments.runs)
    print(table(results, machine))
    if arguments.out:
        with open(arguments.out, "w") as file:
            json.dump({"machine": machine, "rows": results}, file, indent=2)


if __name__ == "__main__":
    main()
