"""memproxy's benchmarks (not run by CI): ``python -m bench <command>``; see BENCHMARKS.md."""
