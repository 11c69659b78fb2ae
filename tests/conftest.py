# Shared pytest setup: import the top-level scripts, and find ../shared (the reference fixtures).
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SHARED = os.environ.get("TRM_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))
GOLDEN = os.path.join(SHARED, "golden")
ARC_KAGGLE = os.path.join(SHARED, "data", "arc-kaggle")


@pytest.fixture(scope="session")
def golden():
    """Path to ../shared/golden; the tests that compare with the reference need it."""
    if not os.path.isdir(GOLDEN):
        pytest.fail(f"reference fixtures not found at {GOLDEN} (set TRM_SHARED)")
    return GOLDEN
