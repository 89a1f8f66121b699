"""Evaluation: pure metrics, the full and sampled protocols, scorers, bootstrap intervals and paired
comparisons, evaluation settings, metrics JSON."""
