"""Wars declared in EVE Online in the last 24 hours, from the public ESI API: a report and the data.

Pages through the war ids (newest first), fetches each war's details a batch at a time with
bounded concurrency until the wars are older than 24 hours, resolves the aggressors' and
defenders' names, and returns:

- `report.md`: the wars as a readable Markdown report;
- `wars.csv` and `wars.json`: the same data, one war a row.

Environment variables:

- `ESI_BASE_URL`: the API (default `https://esi.evetech.net/latest`);
- `ESI_NOW`: report the 24 hours before this moment (ISO 8601) instead of before now;
- `ESI_CONCURRENCY`: requests in flight at once (default 8, at most 20);
- `ESI_MAX_WARS`: stop after looking at this many wars (default 2000);
- `ESI_TIMEOUT`: seconds to wait for each answer (default 20).
"""

import concurrent.futures
import csv
import datetime
import io
import json
import os

import requests

USER_AGENT = "Parseq demo parser eve_wars (+https://github.com/parseq)"
BATCH = 50
COLUMNS = ["id", "declared", "started", "aggressor", "aggressor_id", "defender", "defender_id", "mutual", "allies"]


class Esi:
    def __init__(self):
        self.base_url = os.environ.get("ESI_BASE_URL", "https://esi.evetech.net/latest").rstrip("/")
        self.timeout = float(os.environ.get("ESI_TIMEOUT", "20"))
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT

    def call(self, method, path, **options):
        url = f"{self.base_url}{path}"
        try:
            response = self.session.request(method, url, timeout=self.timeout, **options)
        except requests.RequestException as error:
            raise RuntimeError(f"{method} {url} failed: {error}") from None
        if response.status_code != 200:
            raise RuntimeError(f"{method} {response.url} answered {response.status_code} {response.reason}")
        try:
            return response.json()
        except ValueError:
            raise RuntimeError(f"{method} {response.url} did not return JSON") from None

    def war_ids(self, below=None):
        ids = self.call("GET", "/wars/", params={"max_war_id": below} if below else None)
        if not isinstance(ids, list) or not all(isinstance(war_id, int) for war_id in ids):
            raise RuntimeError(f"GET {self.base_url}/wars/ did not return a list of war ids")
        return sorted(ids, reverse=True)

    def war(self, war_id):
        war = self.call("GET", f"/wars/{war_id}/")
        try:
            declared = parse_time(war["declared"])
            sides = [side_of(war[name]) for name in ("aggressor", "defender")]
        except (KeyError, TypeError, ValueError):
            raise RuntimeError(f"GET {self.base_url}/wars/{war_id}/: not the details of a war") from None
        started = parse_time(war["started"]) if war.get("started") else None
        return {
            "id": war_id,
            "declared": declared,
            "started": started,
            "aggressor_id": sides[0],
            "defender_id": sides[1],
            "mutual": bool(war.get("mutual")),
            "allies": len(war.get("allies") or []),
        }

    def names(self, ids):
        found = {}
        ids = sorted(ids)
        for start in range(0, len(ids), 1000):
            answer = self.call("POST", "/universe/names/", json=ids[start : start + 1000])
            try:
                found.update({entry["id"]: entry["name"] for entry in answer})
            except (KeyError, TypeError):
                raise RuntimeError(f"POST {self.base_url}/universe/names/ did not return a list of names") from None
        return found


def parse_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def side_of(side):
    return side.get("alliance_id") or side["corporation_id"]


def recent_wars(esi, since, limit, workers):
    """Wars declared since `since`: newest ids first, a batch at a time, until a batch reaches back past it."""
    wars, looked_at, below = [], 0, None
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        while looked_at < limit:
            ids = esi.war_ids(below)
            if not ids:
                return wars
            for start in range(0, len(ids), BATCH):
                batch = list(pool.map(esi.war, ids[start : start + BATCH]))
                looked_at += len(batch)
                fresh = [war for war in batch if war["declared"] >= since]
                wars.extend(fresh)
                # Ids grow with time: once a batch reaches back past `since`, the older ids are older wars.
                if len(fresh) < len(batch) or looked_at >= limit:
                    return wars
            below = ids[-1] - 1
    return wars


def report(wars, since, until):
    lines = [
        "# Wars declared in EVE Online",
        "",
        f"From {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC: **{len(wars)} war(s)**"
        + (f", {sum(1 for war in wars if war['mutual'])} of them mutual." if wars else "."),
        "",
    ]
    if wars:
        lines += [
            "| declared (UTC) | aggressor | defender | fighting from | mutual | allies |",
            "|---|---|---|---|---|---|",
        ]
        for war in wars:
            started = f"{war['started']:%Y-%m-%d %H:%M}" if war["started"] else "-"
            lines.append(
                f"| {war['declared']:%Y-%m-%d %H:%M} | {war['aggressor']} | {war['defender']} | {started} "
                f"| {'yes' if war['mutual'] else 'no'} | {war['allies']} |"
            )
    return "\n".join(lines) + "\n"


def as_rows(wars):
    return [
        {**war, "declared": war["declared"].isoformat(), "started": war["started"] and war["started"].isoformat()}
        for war in wars
    ]


def as_csv(rows):
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


def parse():
    until = parse_time(os.environ["ESI_NOW"]) if os.environ.get("ESI_NOW") else datetime.datetime.now(datetime.UTC)
    since = until - datetime.timedelta(hours=24)
    workers = min(int(os.environ.get("ESI_CONCURRENCY", "8")), 20)
    esi = Esi()
    limit = int(os.environ.get("ESI_MAX_WARS", "2000"))
    wars = [war for war in recent_wars(esi, since, limit, workers) if war["declared"] <= until]
    names = esi.names({war["aggressor_id"] for war in wars} | {war["defender_id"] for war in wars}) if wars else {}
    for war in wars:
        war["aggressor"] = names.get(war["aggressor_id"], f"#{war['aggressor_id']}")
        war["defender"] = names.get(war["defender_id"], f"#{war['defender_id']}")
    print(f"{len(wars)} war(s) declared from {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC")
    rows = as_rows(wars)
    return {
        "report.md": report(wars, since, until).encode("utf-8"),
        "wars.csv": as_csv(rows),
        "wars.json": json.dumps(
            {"since": since.isoformat(), "until": until.isoformat(), "wars": rows}, indent=2
        ).encode(),
    }
