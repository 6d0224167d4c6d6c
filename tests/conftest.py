"""Fixtures shared across areas live in tests/support/, one module per area."""

pytest_plugins = ["tests.support.registry", "tests.support.collector", "tests.support.postgres"]
