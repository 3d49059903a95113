"""The reliability tests reuse the integration world (its lake, data and champion)."""

from tests.integration.conftest import champion, world  # noqa: F401 - fixtures shared with these tests
