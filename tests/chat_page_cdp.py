#!/usr/bin/env python3
"""chat_page_cdp.py — drives the chat page (GET /) in headless Chromium over the DevTools protocol,
with the standard library only (a minimal WebSocket client): opens URL, types MESSAGE, sends it, waits
for the page's "chat-done" event (no fixed sleeps: the page fires it when the stream ends), prints what
the DOM shows as one JSON object, and writes a PNG screenshot to SHOT.

usage: chat_page_cdp.py CHROMIUM URL MESSAGE SHOT   (ES_CHAT_MAX_TOKENS: the reply's max tokens, default 48)
Exit 1 with a message when Chromium cannot start or the protocol fails: the test must fail, not skip.
"""
import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import urllib.parse

CAP_S = float(os.environ.get("ES_WAIT_CAP_S", "120")) * 3  # a cap against hangs, not a timing expectation


class WebSocket:
    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=CAP_S)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            b = self.sock.recv(1)
            if not b:
                raise OSError("the DevTools socket closed during the handshake")
            head += b
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise OSError("DevTools refused the WebSocket: " + head.decode(errors="replace"))

    def _read(self, n):
        out = b""
        while len(out) < n:
            b = self.sock.recv(n - len(out))
            if not b:
                raise OSError("the DevTools socket closed")
            out += b
        return out

    def send(self, text):
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536
                                 else bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def recv(self):
        msg = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)
            op = b0 & 0x0F
            if op == 8:
                raise OSError("DevTools closed the WebSocket")
            if op in (9, 10):  # ping / pong: not part of a message
                continue
            msg += payload
            if b0 & 0x80:
                return msg.decode()


class CDP:
    def __init__(self, ws):
        self.ws, self.next_id, self.events = ws, 0, []

    def call(self, method, params=None, session=None):
        self.next_id += 1
        m = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            m["sessionId"] = session
        self.ws.send(json.dumps(m))
        while True:
            r = json.loads(self.ws.recv())
            if r.get("id") == self.next_id:
                if "error" in r:
                    raise RuntimeError(f"{method}: {r['error']}")
                return r["result"]
            self.events.append(r)

    def wait_event(self, method, session):
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == method and e.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(json.loads(self.ws.recv()))


def evaluate(cdp, session, expr):
    r = cdp.call("Runtime.evaluate", {"expression": expr, "awaitPromise": True, "returnByValue": True}, session)
    if "exceptionDetails" in r:
        raise RuntimeError("page script failed: " + json.dumps(r["exceptionDetails"])[:500])
    return r["result"].get("value")


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    chromium, url, message, shot = sys.argv[1:]
    profile = tempfile.mkdtemp(prefix="es-chromium-")
    # --no-sandbox: CI runs as root in a container, where Chromium's sandbox cannot start
    proc = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--no-first-run", "--remote-debugging-port=0", f"--user-data-dir={profile}",
                             "--window-size=1100,820", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ws_url = None
        lines = []
        for line in proc.stderr:  # Chromium prints where DevTools listens once it is up
            lines.append(line)
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                ws_url = m.group(1)
                break
        if not ws_url:
            sys.exit("chat_page_cdp: Chromium did not start: " + "".join(lines[-10:]))
        cdp = CDP(WebSocket(ws_url))
        target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        cdp.call("Page.enable", session=session)
        cdp.call("Page.navigate", {"url": url}, session)
        cdp.wait_event("Page.loadEventFired", session)
        state = evaluate(cdp, session, """new Promise((resolve) => {
            document.addEventListener('chat-done', (e) => resolve(e.detail.state), {once: true});
            document.getElementById('max_tokens').value = %d;
            document.getElementById('input').value = %s;
            document.getElementById('form').requestSubmit();
        })""" % (int(os.environ.get("ES_CHAT_MAX_TOKENS", "48")), json.dumps(message)))
        dom = evaluate(cdp, session, """(() => {
            const a = [...document.querySelectorAll('.msg.assistant')].pop();
            return {state: document.body.dataset.state, user: document.querySelector('.msg.user .body').textContent,
                    reply: a.querySelector('.body').textContent, draft_spans: a.querySelectorAll('.draft').length,
                    target_spans: a.querySelectorAll('.target').length, stats: a.querySelector('.stats').textContent,
                    error: a.querySelector('.error') ? a.querySelector('.error').textContent : null,
                    done: a.dataset.done === '1', model: document.getElementById('model').textContent};
        })()""")
        dom["event_state"] = state
        png = cdp.call("Page.captureScreenshot", {"format": "png"}, session)["data"]
        with open(shot, "wb") as f:
            f.write(base64.b64decode(png))
        print(json.dumps(dom))
        try:
            cdp.call("Browser.close")
        except OSError:
            pass
    except (OSError, RuntimeError) as e:
        sys.exit(f"chat_page_cdp: {e}")
    finally:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
