"""Shared test fixtures: registry."""
