"""A webhook endpoint for the end-to-end tests: it checks every request's signature with the
`standardwebhooks` package (the reference implementation of the Standard Webhooks
specification, which nobody here wrote) and keeps what it received.

Usage: python3 webhook_receiver.py SECRET [PORT]
Prints the port it listens on (127.0.0.1; PORT, or a free one), then serves:
  POST /hooks          a webhook: verified, recorded, answered as the current mode says
  GET  /received       {"accepted": [...], "rejected": n}: every verified delivery, in order
                       of arrival (retries included), each {"webhook_id", "status", "event"}
  POST /mode           {"status": 200|500|410|..., "delay_ms": n}: how to answer from now on
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET = sys.argv[1]
LOCK = threading.Lock()
STATE = {"accepted": [], "rejected": 0, "status": 200, "delay_ms": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body=b""):
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the sender gave up (its timeout) or died: what it sent is recorded already

    def body(self):
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length)

    def do_GET(self):
        if self.path != "/received":
            return self.reply(404)
        with LOCK:
            body = json.dumps({"accepted": STATE["accepted"], "rejected": STATE["rejected"]})
        self.reply(200, body.encode())

    def do_POST(self):
        payload = self.body()
        if self.path == "/mode":
            mode = json.loads(payload)
            with LOCK:
                STATE["status"] = int(mode.get("status", 200))
                STATE["delay_ms"] = int(mode.get("delay_ms", 0))
            return self.reply(204)
        if self.path != "/hooks":
            return self.reply(404)
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            event = Webhook(SECRET).verify(payload, headers)
        except WebhookVerificationError:
            with LOCK:
                STATE["rejected"] += 1
            return self.reply(400, b'{"error": "bad signature"}')
        with LOCK:
            status, delay_ms = STATE["status"], STATE["delay_ms"]
            STATE["accepted"].append(
                {"webhook_id": headers.get("webhook-id"), "status": status, "event": event}
            )
        if delay_ms:
            time.sleep(delay_ms / 1000)
        self.reply(status, b"{}")


PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 0
server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
