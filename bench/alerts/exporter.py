#!/usr/bin/env python3
"""Scrape target for the Prometheus side of bench/alerts: serves, as one target, the metric
values of every benchmark host, read from a file in the Prometheus text format that
bench/alerts/run.sh writes from what it stored in SecuMon (one line per host and series, with a
`host` label). The file is re-read when it changes, so switching scenarios is a rename.

usage: exporter.py PORT FILE
"""
import http.server
import os
import sys


class Metrics:
    def __init__(self, path):
        self.path = path
        self.stamp = None
        self.body = b""

    def current(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return b""
        stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        if stamp != self.stamp:
            with open(self.path, "rb") as f:
                self.body = f.read()
            self.stamp = stamp
        return self.body


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    port, metrics = int(sys.argv[1]), Metrics(sys.argv[2])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            body = metrics.current()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass  # one line per scrape would only be noise

    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
