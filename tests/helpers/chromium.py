"""Headless Chromium for page tests: load a page over the DevTools protocol, record every console
message, uncaught exception, log entry and network request, read values from the live DOM; and take
a screenshot with Chromium's own ``--screenshot``. Skips (with the reason) when Chromium is absent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed (make test installs it: apt-get install -y chromium)")


@dataclass
class PageLoad:
    errors: list[str] = field(default_factory=list)     # console errors/warnings, exceptions, error log entries
    console: list[str] = field(default_factory=list)    # every console message
    requests: list[str] = field(default_factory=list)   # every URL the page asked for
    values: dict = field(default_factory=dict)          # results of the expressions evaluated after load


def _wait_port(user_data: str, proc: subprocess.Popen, timeout: float = 30.0) -> int:
    path = os.path.join(user_data, "DevToolsActivePort")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        if os.path.exists(path):
            lines = open(path).read().split()
            if lines:
                return int(lines[0])
        time.sleep(0.1)
    raise TimeoutError("chromium did not open its DevTools port")


def load_page(url: str, tmp_dir: str, expressions: dict[str, str] | None = None, timeout: float = 60.0,
              window_size: tuple[int, int] | None = None) -> PageLoad:
    """Open ``url`` in a fresh headless Chromium and return what happened while it loaded (``window_size``:
    (width, height) CSS pixels of the window, e.g. (1280, 900) to check the layout at that width)."""
    import websocket  # websocket-client (test extra)

    user_data = os.path.join(tmp_dir, "chromium-profile")
    size = [f"--window-size={window_size[0]},{window_size[1]}"] if window_size else []
    proc = subprocess.Popen([chromium_binary(), *FLAGS, *size, f"--user-data-dir={user_data}",
                             "--remote-debugging-port=0", "--remote-allow-origins=*", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out = PageLoad()
    try:
        port = _wait_port(user_data, proc)
        # a fresh opener without proxies: urlopen's global opener keeps the proxy settings of its first use,
        # which an earlier test in the same process may have made with $http_proxy pointing nowhere
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        targets = json.load(direct.open(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True)
        ids = iter(range(1, 1_000_000))

        def send(method: str, **params) -> int:
            i = next(ids)
            ws.send(json.dumps({"id": i, "method": method, "params": params}))
            return i

        def handle(msg: dict) -> None:
            method, p = msg.get("method"), msg.get("params", {})
            if method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                out.console.append(f"{p['type']}: {text}")
                if p["type"] in ("error", "warning", "assert"):
                    out.errors.append(f"console.{p['type']}: {text}")
            elif method == "Runtime.exceptionThrown":
                details = p.get("exceptionDetails", {})
                out.errors.append("exception: " + str(details.get("exception", {}).get("description")
                                                      or details.get("text")))
            elif method == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
                out.errors.append(f"log.{p['entry']['level']}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif method == "Network.requestWillBeSent":
                out.requests.append(p["request"]["url"])
            elif method == "Network.loadingFailed":
                out.errors.append(f"network: {p.get('errorText')} ({p.get('type')})")

        def call(method: str, **params) -> dict:
            i = send(method, **params)
            while True:
                msg = json.loads(ws.recv())
                if msg.get("id") == i:
                    if "error" in msg:
                        raise RuntimeError(f"{method}: {msg['error']}")
                    return msg.get("result", {})
                handle(msg)

        for domain in ("Runtime", "Log", "Network", "Page"):
            call(f"{domain}.enable")
        call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv())
            handle(msg)
            if msg.get("method") == "Page.loadEventFired":
                break
        else:
            raise TimeoutError(f"{url} did not finish loading in {timeout} s")
        for name, expr in (expressions or {}).items():
            res = call("Runtime.evaluate", expression=expr, returnByValue=True)
            if "exceptionDetails" in res:
                raise RuntimeError(f"{expr}: {res['exceptionDetails']}")
            out.values[name] = res["result"].get("value")
        ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return out


def screenshot(url: str, png_path: str, tmp_dir: str, size: tuple[int, int] = (1280, 2400)) -> str:
    """Chromium's ``--screenshot`` of ``url`` (a PNG at ``png_path``)."""
    subprocess.run([chromium_binary(), *FLAGS, f"--user-data-dir={os.path.join(tmp_dir, 'chromium-shot')}",
                    f"--screenshot={png_path}", f"--window-size={size[0]},{size[1]}", "--hide-scrollbars", url],
                   check=True, capture_output=True, timeout=120)
    return png_path


def dump_dom(url: str, tmp_dir: str) -> str:
    """The DOM after load, as Chromium's ``--dump-dom`` prints it."""
    done = subprocess.run([chromium_binary(), *FLAGS, f"--user-data-dir={os.path.join(tmp_dir, 'chromium-dom')}",
                           "--dump-dom", url], check=True, capture_output=True, timeout=120)
    return done.stdout.decode("utf-8")
