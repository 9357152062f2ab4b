#!/usr/bin/env python3
"""Drives Debian's headless Chromium through chromedriver (the W3C WebDriver
HTTP API, standard library only) against the page of `edgellm serve`, for
tests/e2e/test_web.sh. One scenario per run; prints one JSON object with what
it saw, and exits 1 (with the reason on stderr) when the page misbehaves.

usage: browser.py URL SCENARIO [--key KEY] [--say TEXT] [--temp T] [--max N] [--screenshot FILE]
  chat    type a message, wait for the streamed reply and for the live panel
          to count the request
  badkey  with a wrong key: the page must say so and send no chat request
  xss     the model's id and reply hold markup: it must show as text and run
          nothing
  panel   a worker's read-only panel: figures, no chat
"""
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Driver:
    def __init__(self, profile):
        self.port = free_port()
        self.proc = subprocess.Popen(["chromedriver", "--port=%d" % self.port],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = "http://127.0.0.1:%d" % self.port
        for _ in range(200):
            try:
                if self.call("GET", "/status")["ready"]:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1100,760", "--user-data-dir=" + profile]
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": {"binary": shutil.which("chromium"), "args": args}}}}
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as e:
            raise RuntimeError("webdriver %s %s: %s" % (method, path, e.read()[:300])) from None

    def s(self, method, path, body=None):
        return self.call(method, "/session/%s%s" % (self.session, path), body)

    def js(self, script, *args):
        return self.s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css):
        return self.s("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def type(self, css, text):
        self.s("POST", "/element/%s/value" % self.find(css), {"text": text})

    def click(self, css):
        self.s("POST", "/element/%s/click" % self.find(css), {})

    def wait(self, script, what, timeout=20):
        t0 = time.time()
        while time.time() - t0 < timeout:
            v = self.js(script)
            if v:
                return v
            time.sleep(0.1)
        raise RuntimeError("timed out waiting for " + what)

    def quit(self):
        try:
            self.s("DELETE", "")
        except Exception:
            pass
        self.proc.terminate()
        self.proc.wait()


def set_key(d, key):
    d.js("const k = document.getElementById('key'); k.value = arguments[0];"
         "k.dispatchEvent(new Event('change'));", key)


def ask(d, text, temp="0", max_tokens="24"):
    # greedy and short by default, so that the reply is the same every run
    d.js("document.getElementById('temperature').value = arguments[0];"
         "document.getElementById('max_tokens').value = arguments[1];", temp, max_tokens)
    d.type("#input", text)
    d.click("#send")


def main():
    url, scenario = sys.argv[1], sys.argv[2]
    opt = dict(zip(sys.argv[3::2], sys.argv[4::2]))
    profile = tempfile.mkdtemp(prefix="edgellm-chromium-")
    d = Driver(profile)
    out = {}
    try:
        d.s("POST", "/url", {"url": url})
        d.wait("return document.readyState === 'complete' && !!document.getElementById('figures').children.length",
               "the live panel")
        if scenario == "panel":
            d.wait("return document.getElementById('m-requests').textContent !== '–'", "the worker's figures")
            out["role"] = d.js("return document.getElementById('role').textContent")
            out["chat_hidden"] = d.js("return document.getElementById('chat').hidden")
            out["requests"] = int(d.js("return document.getElementById('m-requests').textContent"))
            out["sessions"] = d.js("return document.getElementById('m-sessions').textContent")
        elif scenario == "badkey":
            set_key(d, opt.get("--key", "wrong"))
            d.wait("return !document.getElementById('notice').hidden", "the key error")
            ask(d, "Hello")
            time.sleep(1.0)
            out["notice"] = d.js("return document.getElementById('notice').textContent")
            out["messages"] = d.js("return document.querySelectorAll('#log .msg').length")
        else:
            if "--key" in opt:
                set_key(d, opt["--key"])
            d.wait("return document.getElementById('model').options.length > 0", "the model list")
            out["models"] = d.js("return [...document.getElementById('model').options].map(o => o.textContent)")
            d.wait("return document.getElementById('m-requests').textContent !== '–'", "the first figures")
            before = int(d.js("return document.getElementById('m-requests').textContent"))
            ask(d, opt.get("--say", "Tell me a dream"), opt.get("--temp", "0"), opt.get("--max", "24"))
            d.wait("const s = document.querySelector('#log .msg.assistant .stats'); return s && s.textContent",
                   "the end of the reply", 60)
            out["reply"] = d.js("return document.querySelector('#log .msg.assistant .text').textContent")
            out["stats"] = d.js("return document.querySelector('#log .msg.assistant .stats').textContent")
            out["user"] = d.js("return document.querySelector('#log .msg.user .text').textContent")
            d.wait("return Number(document.getElementById('m-requests').textContent) > %d" % before,
                   "the panel to count the request", 10)
            out["panel_before"] = before
            out["panel_requests"] = int(d.js("return document.getElementById('m-requests').textContent"))
            out["panel_tps"] = d.js("return document.getElementById('m-tps').textContent")
            out["panel_batch"] = d.js("return document.getElementById('m-batch').textContent")
            # what markup in the names or the text could have done
            out["xss_ran"] = d.js("return window.__xss !== undefined")
            out["elements_in_log"] = d.js("return document.querySelectorAll('#log script, #log img, #log b').length")
            out["elements_in_picker"] = d.js("return document.querySelectorAll('#model img, #model script').length")
        if "--screenshot" in opt:
            png = base64.b64decode(d.s("GET", "/screenshot"))
            with open(opt["--screenshot"], "wb") as f:
                f.write(png)
            out["screenshot_bytes"] = len(png)
    except Exception as e:  # the reason, for the test's log
        print("browser.py %s: %s" % (scenario, e), file=sys.stderr)
        print(json.dumps(out))
        return 1
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
