"""Reliability harness: crash consistency and concurrency against a real ``dust serve``."""
