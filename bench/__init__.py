"""Benchmarks: one script per measured claim; each writes bench/results/<name>.json."""
