"""Anomaly detection: streaming detectors that score each value of a series as it arrives."""
