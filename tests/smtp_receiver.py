#!/usr/bin/env python3
"""A real SMTP server for SecuMon's end-to-end tests, built on aiosmtpd (Debian python3-aiosmtpd).

Each accepted message is written to DIR as NNNNN.json: envelope, authenticated login, whether
the session was encrypted, and the raw message. Prints "ready" once listening.

    smtp_receiver.py --port 2525 --dir /tmp/mail [--tls none|starttls|implicit --cert C --key K]
                     [--user U --password P]
"""
import argparse
import json
import os
import signal
import ssl
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Handler:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
            n = self.count
        login = getattr(session, "secumon_login", None)
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "login": login,
            "encrypted": session.ssl is not None or getattr(server, "_tls_protocol", None) is not None
                         or server.transport.get_extra_info("ssl_object") is not None,
            "received_at": time.time(),
            "data": envelope.content.decode("utf-8", "replace"),
        }
        tmp = os.path.join(self.directory, ".%05d.tmp" % n)
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(self.directory, "%05d.json" % n))
        return "250 OK queued as secumon-test-%d" % n


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()

    context = None
    if args.tls != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword)
              and auth_data.login.decode() == args.user
              and auth_data.password.decode() == args.password)
        if ok:
            session.secumon_login = args.user
        return AuthResult(success=ok, handled=False)

    kwargs = {}
    if args.user:
        # With implicit TLS aiosmtpd does not know the socket is encrypted: only STARTTLS
        # sessions need its "TLS before AUTH" check.
        kwargs.update(authenticator=authenticator, auth_required=True,
                      auth_require_tls=args.tls == "starttls")
    if args.tls == "starttls":
        kwargs.update(tls_context=context, require_starttls=True)
    controller = Controller(
        Handler(args.dir), hostname="127.0.0.1", port=args.port,
        ssl_context=context if args.tls == "implicit" else None,
        server_hostname="127.0.0.1", **kwargs)
    controller.start()
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
