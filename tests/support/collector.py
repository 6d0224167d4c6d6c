"""Shared test fixtures: collector."""
