"""Strategies written against the public API only: examples for users, and the broken zoo."""
