"""Test-wide settings: plans follow the heuristics, so no test depends on timing or on the
measurements a previous run left in the user's cache (tests of measuring make their own
`Planner` with a temporary cache)."""

import os
import shutil

import pytest

os.environ["ATTNLAB_MEASURE"] = "0"

# Chromium without its own calls home: the machine's network is closed, and no page needs one.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                  "--disable-default-apps"]


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, headless, driven by Playwright (`playwright install` cannot reach its
    download host here); the browser tests skip where either is missing."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()
