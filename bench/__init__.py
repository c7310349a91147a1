"""Benchmarks for memproxy: each one command (``python -m bench NAME``) that prints a table and
writes it into BENCHMARKS.md. Not CI tests."""
