"""Helpers for the test suite: test hosts, in-memory networks, fakes and runners (not tests)."""
