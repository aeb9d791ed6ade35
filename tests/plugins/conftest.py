"""Fixtures of other tests that the plugin tests use: the API tests' world, and a worker for jobs."""

from tests.api.conftest import world  # noqa: F401
from tests.jobs.conftest import worker  # noqa: F401
