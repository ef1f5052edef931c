"""Fixtures shared by the core's unit tests."""
import pytest

from tests.unit.helpers import union_env


@pytest.fixture
def env(tmp_path):
    """(union, lower, upper, work) over the standard small tree of helpers.union_env; a test
    module may define its own `env` instead."""
    return union_env(tmp_path)
