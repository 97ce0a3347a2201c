"""Benchmarks on the real engine; run from the repository root as ``python -m bench.<script>``."""
