"""Benchmarks: commands that print JSON (`medvl bench`), never timed tests."""
