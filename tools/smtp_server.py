#!/usr/bin/env python3
"""A real SMTP server for the mailer crate's tests (aiosmtpd, 127.0.0.1 only).

Every accepted message is written into --maildir as NNNN-<uuid>.eml (the bytes
received after DATA) with a NNNN-<uuid>.json sidecar holding the envelope and the
message as Python's email package parses it, so tests need no MIME decoder:
{"mail_from", "rcpt_tos": [...], "received_at", "subject", "from", "to",
 "content_type", "text", "html"} (text/html: the decoded text/plain and
text/html bodies, or null). The sidecar is written first and the .eml is
renamed into place, so a reader that sees the .eml also sees its envelope.

`smtp_server.py --parse-eml FILE` prints that parsed JSON for an .eml file
(the mailer's outbox files) and exits.

Options:
  --port 0               pick a free port; the first stdout line is
                         "LISTENING 127.0.0.1:PORT" (flushed).
  --reject-pattern RE    RCPT TO addresses matching RE get
                         "550 5.1.1 <addr>: Recipient address rejected".
  --tempfail-count N     the first N DATA commands get
                         "451 4.3.0 Temporary failure, try again later".
  --tls-cert/--tls-key   PEM files: offer STARTTLS with them, or with
  --implicit-tls         wrap the whole connection in TLS (as on port 465).

The server stops on SIGTERM/SIGINT, or when its stdin reaches end of file,
so a test that dies without killing it does not leave it running.
"""

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import ssl
import sys
import threading
import time
import uuid
from email import policy
from email.parser import BytesParser

from aiosmtpd.smtp import SMTP


def parse_message(raw):
    """The parts of a message that tests check, decoded (transfer encoding, charset)."""
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    return {
        "subject": msg.get("Subject"),
        "from": msg.get("From"),
        "to": msg.get("To"),
        "message_id": msg.get("Message-ID"),
        "content_type": msg.get_content_type(),
        "text": text.get_content() if text is not None else None,
        "html": html.get_content() if html is not None else None,
    }


class Handler:
    def __init__(self, maildir, reject, tempfail_count):
        self.maildir = maildir
        self.reject = reject
        self.tempfail_left = tempfail_count
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.reject is not None and self.reject.search(address):
            return f"550 5.1.1 <{address}>: Recipient address rejected"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.tempfail_left > 0:
            self.tempfail_left -= 1
            return "451 4.3.0 Temporary failure, try again later"
        self.count += 1
        stem = f"{self.count:04d}-{uuid.uuid4().hex}"
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8")
        sidecar = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "received_at": time.time(),
        }
        sidecar.update(parse_message(content))
        json_path = os.path.join(self.maildir, stem + ".json")
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(sidecar, f)
        tmp = os.path.join(self.maildir, stem + ".eml.tmp")
        with open(tmp, "wb") as f:
            f.write(content)
        os.replace(tmp, os.path.join(self.maildir, stem + ".eml"))
        return "250 2.0.0 Message accepted for delivery"


def tls_context(cert, key):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


async def main(args):
    if args.quiet:
        logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    os.makedirs(args.maildir, exist_ok=True)
    reject = re.compile(args.reject_pattern) if args.reject_pattern else None
    handler = Handler(args.maildir, reject, args.tempfail_count)

    starttls_ctx = None
    server_ssl = None
    if args.tls_cert:
        ctx = tls_context(args.tls_cert, args.tls_key)
        if args.implicit_tls:
            server_ssl = ctx
        else:
            starttls_ctx = ctx

    def factory():
        return SMTP(
            handler,
            hostname="localhost",
            decode_data=False,
            tls_context=starttls_ctx,
            require_starttls=starttls_ctx is not None,
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, host="127.0.0.1", port=args.port, ssl=server_ssl)
    port = server.sockets[0].getsockname()[1]
    print(f"LISTENING 127.0.0.1:{port}", flush=True)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def watch_stdin():
        # Blocks until the parent closes our stdin (or exits).
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        loop.call_soon_threadsafe(stop.set)

    if not args.ignore_stdin:
        threading.Thread(target=watch_stdin, daemon=True).start()

    await stop.wait()
    server.close()
    await server.wait_closed()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 picks a free one)")
    p.add_argument("--maildir", help="directory for received .eml/.json files")
    p.add_argument("--parse-eml", metavar="FILE", help="print the parsed JSON of an .eml file and exit")
    p.add_argument("--reject-pattern", help="regex; matching recipients get a 550 reply")
    p.add_argument("--tempfail-count", type=int, default=0, help="answer the first N DATA with 451")
    p.add_argument("--tls-cert", help="PEM certificate for STARTTLS or implicit TLS")
    p.add_argument("--tls-key", help="PEM private key for --tls-cert")
    p.add_argument("--implicit-tls", action="store_true", help="TLS from the first byte (port 465 style)")
    p.add_argument("--ignore-stdin", action="store_true", help="do not stop when stdin closes")
    p.add_argument("--quiet", action="store_true", help="do not log session errors (failed TLS handshakes)")
    args = p.parse_args(argv)
    if not args.parse_eml and not args.maildir:
        p.error("--maildir is required")
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if args.implicit_tls and not args.tls_cert:
        p.error("--implicit-tls needs --tls-cert and --tls-key")
    return args


if __name__ == "__main__":
    cli = parse_args()
    if cli.parse_eml:
        with open(cli.parse_eml, "rb") as eml:
            json.dump(parse_message(eml.read()), sys.stdout)
        print(flush=True)
    else:
        asyncio.run(main(cli))
