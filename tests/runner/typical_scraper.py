import csv
import io
import json
import os
from dataclasses import dataclass

import requests
from bs4 import BeautifulSoup


class PageError(Exception):
    def __init__(self, url):
        super().__init__(f"unexpected page at {url}")
        self.url = url


@dataclass
class Row:
    name: str
    price: float


class Client:
    def __init__(self, base):
        self.base = base
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "parseq-demo"
        self.session.headers.update({"Accept": "text/html"})
        self.count = 0

    def note(self):
        self.count += 1


def parse():
    client = Client(os.environ.get("BASE_URL", "http://example.invalid"))
    client.note()
    soup = BeautifulSoup("<ul><li data-p='1.5'>a</li><li data-p='2'>b</li></ul>", "lxml")
    rows = [Row(li.get_text(), float(li["data-p"])) for li in soup.find_all("li")]
    total = 0
    for row in rows:
        total += row.price
    first, *others = rows
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["name", "price"])
    for row in rows:
        writer.writerow([row.name, row.price])
    print(f"parsed {len(rows)} rows, total {total}, first {first.name} and {len(others)} more, calls {client.count}")
    data = {r.name: r.price for r in rows}
    try:
        {}["missing"]
    except KeyError as error:
        print("handled", repr(error))
    try:
        raise PageError(client.base)
    except PageError as error:
        print("handled", error, "for", error.url)
    with open("scratch.txt", "w") as scratch:
        scratch.write("x")
    return {"rows.csv": buffer.getvalue().encode(), "rows.json": json.dumps(data, sort_keys=True).encode()}


if __name__ == "__main__":
    print(parse())
