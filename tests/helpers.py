"""Helpers shared by the tests: tiny sizes and access to ../shared data."""

import pytest

from tfcartoon.paths import ENV_VAR, shared_path

GROUPS = ["young_women", "young_men", "kids", "elderly"]


def require_shared(*parts):
    """Return the path of ``../shared/<parts>``; skip the test when it is absent."""
    path = shared_path(*parts)
    if path is None:
        pytest.skip(
            f"shared data {'/'.join(parts)!r} not found (set ${ENV_VAR} or place "
            "the shared folder beside the repository)"
        )
    return path
