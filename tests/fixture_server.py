"""An HTTP server for a test host: answers from a routes file, as a recorded service would.

Usage: python fixture_server.py ADDRESS PORT DIRECTORY

DIRECTORY/routes.json is a list of routes, tried in order:
{"method": "GET", "path": "/v1/forecast", "query": {"latitude": "52.52"}, "status": 200,
 "content_type": "application/json", "file": "forecast.json"}
`query` (optional) must be a subset of the request's query; `file` is read from DIRECTORY,
or `body` is sent as is. Every request is appended to DIRECTORY/requests.log as a JSON line
(method, path, query, User-Agent, body), so a test can check what a parser asked for.
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit


def make_handler(directory):
    with open(os.path.join(directory, "routes.json"), encoding="utf-8") as file:
        routes = json.load(file)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.answer()

        def do_POST(self):
            self.answer()

        def answer(self):
            url = urlsplit(self.path)
            query = dict(parse_qsl(url.query, keep_blank_values=True))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
            entry = {"method": self.command, "path": url.path, "query": query, "body": body}
            entry["user_agent"] = self.headers.get("User-Agent", "")
            with open(os.path.join(directory, "requests.log"), "a", encoding="utf-8") as log:
                log.write(json.dumps(entry) + "\n")
            route = next((r for r in routes if self.matches(r, url.path, query)), None)
            if route is None:
                route = {"status": 404, "content_type": "text/plain", "body": f"no route for {self.path}"}
            if "file" in route:
                with open(os.path.join(directory, route["file"]), "rb") as file:
                    content = file.read()
            else:
                content = route.get("body", "").encode("utf-8")
            self.send_response(route.get("status", 200))
            self.send_header("Content-Type", route.get("content_type", "application/octet-stream"))
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def matches(self, route, path, query):
            wanted = route.get("query", {})
            same_query = all(query.get(key) == str(value) for key, value in wanted.items())
            return route.get("method", "GET") == self.command and route["path"] == path and same_query

        def log_message(self, *args):
            pass

    return Handler


if __name__ == "__main__":
    address, port, directory = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ThreadingHTTPServer((address, port), make_handler(directory)).serve_forever()
