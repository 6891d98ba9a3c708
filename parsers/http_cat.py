"""A random cat for a random HTTP status code, from http.cat.

Fetches https://http.cat/<code>.jpg for a status code picked at random from the codes
http.cat has a picture for, and returns:

- `<code>.jpg`: the picture;
- `status.json`: the code, its reason phrase and where the picture came from.

Environment variables:

- `HTTP_CAT_BASE_URL`: where the pictures are (default `https://http.cat`);
- `HTTP_CAT_CODE`: always this code instead of a random one (it must be one of the codes below);
- `HTTP_CAT_TIMEOUT`: seconds to wait for the server (default 20).
"""

import http
import json
import os
import random

import requests

USER_AGENT = "Parseq demo parser http_cat (+https://github.com/parseq)"
# Codes with a picture on http.cat, and the reason phrases of those the standard library does not know.
UNOFFICIAL = {
    420: "Enhance Your Calm",
    444: "No Response",
    450: "Blocked by Windows Parental Controls",
    494: "Request Header Too Large",
    498: "Invalid Token",
    499: "Client Closed Request",
    509: "Bandwidth Limit Exceeded",
    521: "Web Server Is Down",
    522: "Connection Timed Out",
    523: "Origin Is Unreachable",
    525: "SSL Handshake Failed",
    530: "Site Frozen",
    599: "Network Connect Timeout Error",
}
OFFICIAL = [
    100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 307,
    308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 421,
    422, 423, 424, 425, 426, 428, 429, 431, 451, 500, 501, 502, 503, 504, 506, 507, 508, 510, 511,
]  # fmt: skip
CODES = sorted(OFFICIAL + list(UNOFFICIAL))
JPEG_START = b"\xff\xd8\xff"


def reason_of(code):
    if code in UNOFFICIAL:
        return UNOFFICIAL[code]
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


def pick_code():
    fixed = os.environ.get("HTTP_CAT_CODE", "").strip()
    if not fixed:
        return random.choice(CODES)
    if not fixed.isdigit() or int(fixed) not in CODES:
        raise ValueError(f"HTTP_CAT_CODE={fixed!r} is not a code http.cat has a picture for")
    return int(fixed)


def fetch_picture(url):
    timeout = float(os.environ.get("HTTP_CAT_TIMEOUT", "20"))
    try:
        response = requests.get(url, headers={"User-Agent": USER_AGENT}, timeout=timeout)
    except requests.RequestException as error:
        raise RuntimeError(f"GET {url} failed: {error}") from None
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} answered {response.status_code} {response.reason}")
    if not response.content.startswith(JPEG_START):
        kind = response.headers.get("Content-Type", "unknown")
        raise RuntimeError(f"GET {url} did not return a JPEG picture (Content-Type {kind})")
    return response.content


def parse():
    base_url = os.environ.get("HTTP_CAT_BASE_URL", "https://http.cat").rstrip("/")
    code = pick_code()
    url = f"{base_url}/{code}.jpg"
    picture = fetch_picture(url)
    print(f"{code} {reason_of(code)}: {len(picture)} bytes from {url}")
    status = {"code": code, "reason": reason_of(code), "image": f"{code}.jpg", "source": url}
    return {
        f"{code}.jpg": picture,
        "status.json": json.dumps(status, indent=2).encode(),
    }
