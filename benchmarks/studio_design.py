"""The studio's Design screen: how long a change of program takes to answer at N = 1024, from the
first change not yet asked about to the mask and plan drawn, as the page's own clock reports it
(`body[data-response-ms]`), in Debian's chromium against a real `attnlab studio` (issue M: ≤ 200 ms).

    PYTHONPATH=src python benchmarks/studio_design.py --rounds 3 --json benchmarks/studio-design.json
    PYTHONPATH=src python benchmarks/studio_design.py --while-training trec   # with a training running

Each round replaces the whole program 23 times (masks of every kind, zoo programs among them) and
then edits a window size key by key (Backspace, then a digit: two questions, the second asked
when the first is answered). It also lists every host the page asked.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from urllib.parse import urlparse

from playwright.sync_api import sync_playwright

PROGRAMS = [
    "scaled_dot ; causal ; softmax",
    "scaled_dot ; window(16) ; softmax",
    "scaled_dot ; causal & window(64) ; softmax",
    "scaled_dot ; window(128) | global_tokens(4) ; softmax",
    "scaled_dot ; causal & window(8) ; sparsemax",
    "scaled_dot ; softmax",
    "scaled_dot + alibi ; causal ; softmax",
    "scaled_dot ; dilated(16, 2) ; softmax",
    "scaled_dot ; causal & window(256) ; softmax",
    "scaled_dot ; window(96) | global_tokens(64) | random_blocks(0.05) ; softmax",
    "scaled_dot ; causal & ~window(4) ; softmax",
    "scaled_dot ; window(32) | global_tokens(16) ; entmax(1.5)",
    "scaled_dot ; causal ; sigmoid",
    "scaled_dot ; causal | prefix(128) ; softmax",
    "scaled_dot ; window(2) ; softmax",
    "scaled_dot ; causal & window(512) ; softmax",
    "scaled_dot ; causal & windw(32) ; softmax",  # a typo: the caret error
    "scaled_dot ; window(48) & causal ; softmax",
    "scaled_dot ; global_tokens(1) ; softmax",
    "scaled_dot ; causal & window(100) ; softmax",
    "scaled_dot ; window(7) ; softmax",
    "scaled_dot ; causal & window(1000) ; softmax",
    "scaled_dot ; causal ; topk(8)",
]
ANSWERED = "b => document.body.dataset.answers !== b && document.body.dataset.state"
READ = "[document.body.dataset.state, +document.body.dataset.responseMs]"


def serve(experiments: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tempfile.mkdtemp(prefix="studio-bench-")
    proc = subprocess.Popen([sys.executable, "-m", "attnlab.cli.app", "studio", "--port", str(port),
                             "--tracking-uri", f"sqlite:///{root}/mlflow.db",
                             "--experiments", experiments], cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(240):
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.25)
    proc.kill()
    raise SystemExit("the studio did not start within a minute")


def post(url: str, body: dict | None = None) -> dict:
    """POST `body` as JSON (GET without one); the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.load(r)


def change(page, act) -> tuple[str, float]:
    before = page.evaluate("document.body.dataset.answers")
    act()
    page.wait_for_function(ANSWERED, arg=before, timeout=30_000)
    page.wait_for_timeout(150)  # let a second question (typed keys) land before reading
    return tuple(page.evaluate(READ))


def one_round(page) -> dict[str, list[float]]:
    found = {"program": [], "error": [], "typed": []}
    for text in PROGRAMS:
        state, ms = change(page, lambda t=text: page.fill("#program", t))
        found["program" if state == "ok" else "error"].append(ms)
    change(page, lambda: page.fill("#program", "scaled_dot ; causal & window(64) ; softmax"))
    page.click("#program")
    for digit in "123456789":  # window(64) → window(61) … window(69), key by key
        page.keyboard.press("End")
        for _ in ") ; softmax":
            page.keyboard.press("ArrowLeft")
        state, ms = change(page, lambda d=digit: (page.keyboard.press("Backspace"),
                                                page.keyboard.press(d)))
        assert state == "ok", page.input_value("#program")
        found["typed"].append(ms)
    return found


def summary(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "median_ms": round(statistics.median(xs), 1), "min_ms": round(min(xs), 1),
            "max_ms": round(max(xs), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--while-training", metavar="EXPERIMENT",
                    help="measure while the studio trains this shipped experiment (cancelled after)")
    args = ap.parse_args()
    proc, url = serve(os.path.abspath("experiments"))
    try:
        if args.while_training:
            job = post(url + "api/runs", {"experiment": args.while_training,
                                          "set": ["train.epochs=100"]})["jobs"][0]["id"]
            while post(url + f"api/runs/{job}")["state"] != "running":
                time.sleep(0.5)
            time.sleep(20)  # past the worker's imports: training steps are running
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"),
                                        args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            hosts = set()
            page.on("request", lambda r: hosts.add(urlparse(r.url).netloc))
            page.goto(url)
            page.wait_for_function("document.body.dataset.state === 'ok'")
            change(page, lambda: (page.fill("#seq", str(args.seq)), page.dispatch_event("#seq", "change")))
            rounds = [one_round(page) for _ in range(args.rounds)]
            browser.close()
        if args.while_training:
            post(url + f"api/runs/{job}/cancel", {})
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    result = {"seq": args.seq, "while_training": args.while_training,
              "machine": f"{platform.machine()}, {platform.processor() or '?'}",
              "rounds": [{k: summary(v) for k, v in r.items()} for r in rounds],
              "all": {k: summary([x for r in rounds for x in r[k]]) for k in rounds[0]},
              "hosts": sorted(hosts)}
    for i, r in enumerate(result["rounds"], 1):
        print(f"round {i}: " + " · ".join(f"{k} median {v['median_ms']} ms (max {v['max_ms']}, n {v['n']})"
                                          for k, v in r.items()))
    for k, v in result["all"].items():
        print(f"all {k}: n {v['n']}, median {v['median_ms']} ms, min {v['min_ms']}, max {v['max_ms']}")
    print("hosts asked:", ", ".join(result["hosts"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
