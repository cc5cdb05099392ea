"""Helpers shipped for users and the test suite to build test artefacts (packages, images)."""
