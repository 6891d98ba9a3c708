"""Today's official exchange rates of the Central Bank of Russia, as CSV and JSON.

Fetches the daily rates XML (https://www.cbr.ru/scripts/XML_daily.asp, in windows-1251)
and returns:

- `rates.csv`: one currency a line: code, numeric code, nominal, name, rate for the
  nominal and rate for one unit, in roubles;
- `rates.json`: the date the bank set the rates for, and the same rows.

Environment variables:

- `CBR_BASE_URL`: where the XML is (default `https://www.cbr.ru/scripts/XML_daily.asp`);
- `CBR_DATE`: the rates of this day, as `YYYY-MM-DD`, instead of today's;
- `CBR_TIMEOUT`: seconds to wait for the server (default 30).
"""

import csv
import datetime
import io
import json
import os
import xml.etree.ElementTree as ElementTree

import requests

USER_AGENT = "Parseq demo parser cbr_rates (+https://github.com/parseq)"
COLUMNS = ["char_code", "num_code", "nominal", "name", "value", "unit_rate"]


def fetch_xml():
    url = os.environ.get("CBR_BASE_URL", "https://www.cbr.ru/scripts/XML_daily.asp")
    params = {}
    day = os.environ.get("CBR_DATE", "").strip()
    if day:
        params["date_req"] = datetime.date.fromisoformat(day).strftime("%d/%m/%Y")
    timeout = float(os.environ.get("CBR_TIMEOUT", "30"))
    try:
        response = requests.get(url, params=params, headers={"User-Agent": USER_AGENT}, timeout=timeout)
    except requests.RequestException as error:
        raise RuntimeError(f"GET {url} failed: {error}") from None
    if response.status_code != 200:
        raise RuntimeError(f"GET {response.url} answered {response.status_code} {response.reason}")
    return response.url, response.content


def number(text):
    """The bank writes decimals with a comma: '78,9200'."""
    return float(text.replace(",", ".").replace(" ", ""))


def read_rates(url, content):
    try:
        root = ElementTree.fromstring(content)
    except ElementTree.ParseError as error:
        raise RuntimeError(f"{url} did not return XML: {error}") from None
    if root.tag != "ValCurs" or not root.get("Date"):
        raise RuntimeError(f"{url} returned XML without <ValCurs Date=...>: not the daily rates")
    date = datetime.datetime.strptime(root.get("Date"), "%d.%m.%Y").date()
    rows = []
    for valute in root.iter("Valute"):
        try:
            nominal = int(valute.findtext("Nominal"))
            value = number(valute.findtext("Value"))
            unit = valute.findtext("VunitRate")
            rows.append(
                {
                    "char_code": valute.findtext("CharCode").strip(),
                    "num_code": valute.findtext("NumCode").strip(),
                    "nominal": nominal,
                    "name": valute.findtext("Name").strip(),
                    "value": value,
                    "unit_rate": round(number(unit) if unit else value / nominal, 6),
                }
            )
        except (TypeError, ValueError, AttributeError):
            raise RuntimeError(f"{url}: a <Valute> lacks a field or has a malformed number") from None
    if not rows:
        raise RuntimeError(f"{url} returned no rates for {date}")
    return date, sorted(rows, key=lambda row: row["char_code"])


def as_csv(rows):
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


def parse():
    url, content = fetch_xml()
    date, rows = read_rates(url, content)
    print(f"{len(rows)} rates for {date} from {url}")
    document = {"date": date.isoformat(), "source": url, "currency": "RUB", "rates": rows}
    return {
        "rates.csv": as_csv(rows),
        "rates.json": json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8"),
    }
