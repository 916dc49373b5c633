"""Test-wide settings: plans follow the heuristics, so no test depends on timing or on the
measurements a previous run left in the user's cache (tests of measuring make their own
`Planner` with a temporary cache)."""

import os

os.environ["ATTNLAB_MEASURE"] = "0"
