"""Evaluation: pure metrics, the full and sampled protocols, scorers, bootstrap intervals, metrics JSON."""
