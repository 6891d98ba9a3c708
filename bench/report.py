"""The table of `make bench`: Parseq and Scrapyd side by side, from the JSON the other benchmarks wrote.

Usage: .venv/bin/python bench/report.py [RESULTS_DIR]   (after bench/end_to_end.py and bench/scrapyd_bench.py)
Prints the table as Markdown and writes it to RESULTS_DIR/report.md. The authentication rows come from
end_to_end.json, or from end_to_end_auth.json (`bench/end_to_end.py --only auth`) when it has none.
"""

import json
import sys
from pathlib import Path

RESULTS = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "results"


def load(name):
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def ms(figures):
    return f"{figures['p50']:.0f} | {figures['p95']:.0f}"


def rows(parseq, scrapyd):
    latency = parseq["latency"]
    yield "trivial job: trigger → finished (ms, p50 / p95)", ms(latency["trigger_to_completed_ms"]), ""
    yield "trivial job: trigger → running (ms, p50 / p95)", ms(latency["trigger_to_running_ms"]), ""
    for name, label in (("scrapyd_default", "Scrapyd, 5 s poll"), ("scrapyd_poll_0.1", "Scrapyd, 0.1 s poll")):
        if scrapyd and name in scrapyd:
            result = scrapyd[name]
            yield f"trivial job: trigger → finished (ms, p50 / p95), {label}", ms(result["latency_ms"]), ""
            yield f"{result['jobs']} trivial jobs at once (jobs/s), {label}", "", f"{result['throughput_per_s']}"
    if "latency_cold" in parseq:
        cold = parseq["latency_cold"]
        yield "trivial job, cold start: trigger → finished (ms, p50 / p95)", ms(cold["trigger_to_completed_ms"]), ""
        yield "trivial job, cold start: trigger → running (ms, p50 / p95)", ms(cold["trigger_to_running_ms"]), ""
    for result in [*parseq["throughput"], *([parseq["throughput_cold"]] if "throughput_cold" in parseq else [])]:
        yield (
            f"{result['runs']} trivial runs (runs/s), {result['worker']}",
            "",
            f"{result['runs_per_second']}",
        )
    for key, label in (("lateness_scheduler_alone", "idle workers"), ("lateness", "busy workers")):
        if key in parseq:
            lateness = parseq[key]["created_minus_due_ms"]
            yield (
                f"50 parsers due at one second: lateness (ms, p50 / p95), {label}",
                ms(lateness),
                f"max {lateness['max']:.0f}",
            )
    download = parseq["download"]
    peak = download["vmhwm_after_mib"][0]
    yield (
        f"{download['size_mib']} MiB download (MiB/s; web peak MiB)",
        "",
        f"{download['mib_per_second']['p50']:.0f}; {peak}",
    )
    stored = parseq["worker_memory"]
    yield f"storing a {stored['result_mib']} MiB result: worker peak (MiB)", "", f"{stored['vmhwm_after_mib'][0]}"
    connections = parseq["connections"]
    yield (
        f"DB connections during {connections['runs']} long runs (max a sample; longest idle s)",
        "",
        f"{connections['connections_per_sample_while_all_running']['max']:.0f}; {connections['max_idle_age_seconds']}",
    )
    yield from auth_rows(parseq.get("auth"))


def auth_rows(auth):
    """HTTP Basic against a token, with Basic's cache on and off: per request (ms), and the wall time of them all."""
    if not auth:
        return
    for label, cache in (("cache_on", "Basic cache on"), ("cache_off", "Basic cache off")):
        for kind, name in (("basic", "HTTP Basic"), ("token", "token")):
            figures = auth[label][kind]
            yield (
                f"{auth['triggers']} API triggers, {name}, {cache} (ms per request, p50 / p95; s in all)",
                ms(figures["answer_ms"]),
                f"{figures['wall_seconds']:.1f} s",
            )


def main():
    parseq, scrapyd = load("end_to_end.json"), load("scrapyd.json")
    if parseq is None:
        raise SystemExit(f"no {RESULTS / 'end_to_end.json'}: run bench/end_to_end.py first")
    if "auth" not in parseq:
        parseq["auth"] = (load("end_to_end_auth.json") or {}).get("auth")
    machine = parseq["machine"]
    lines = [
        f"Machine: {machine['cores']} cores ({machine['cpu_model']}), Python {machine['python']}, "
        f"sandbox {', '.join(machine['sandbox_backends_used'])}, measured {parseq['measured_at']}",
        "",
        "| what | p50 | p95 | figure |",
        "| --- | --- | --- | --- |",
    ]
    for what, percentiles, figure in rows(parseq, scrapyd):
        p50, _, p95 = percentiles.partition(" | ")
        lines.append(f"| {what} | {p50} | {p95} | {figure} |")
    table = "\n".join(lines) + "\n"
    print(table)
    (RESULTS / "report.md").write_text(table)


if __name__ == "__main__":
    main()
