"""Test-wide settings: plans follow the heuristics, so no test depends on timing or on the
measurements a previous run left in the user's cache (tests of measuring make their own
`Planner` with a temporary cache)."""

import os
import shutil
import socket
import threading
import time

import pytest
import torch

os.environ["ATTNLAB_MEASURE"] = "0"
THREADS = torch.get_num_threads()  # as the process began (OMP_NUM_THREADS or the machine's cores)


@pytest.fixture(autouse=True)
def _torch_threads():
    """Each test finds torch's thread count as the process began: the bench and serve commands,
    run in-process by their tests, set it, and a later test that compares a run in this process
    with one in a child process bit for bit (resume) needs both on the same count."""
    yield
    if torch.get_num_threads() != THREADS:
        torch.set_num_threads(THREADS)


# Chromium without its own calls home: the machine's network is closed, and no page needs one.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                  "--disable-default-apps"]


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, headless, driven by Playwright (`playwright install` cannot reach its
    download host here); a browser test skips where either is missing."""
    if shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (make test installs it with apt-get)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                   "(make test installs it with the test extra)")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def serve():
    """`serve(make_app, host)`: an app made for a free port on `host` (loopback unless said;
    `make_app(port)`, since the studio checks the Host header against it), served by uvicorn in a
    thread; its URL. Every server started stops when the module's tests are done."""
    uvicorn = pytest.importorskip("uvicorn")
    servers = []

    def start(make_app, host: str = "127.0.0.1") -> str:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(make_app(port), host=host, port=port,
                                               log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        while not server.started:
            time.sleep(0.02)
        return f"http://{host}:{port}/"

    yield start
    for server, _ in servers:
        server.should_exit = True
    for _, thread in servers:
        thread.join(10)
