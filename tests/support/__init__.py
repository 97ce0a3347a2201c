"""What the tests and ``bench/`` share: stub servers, real balancers, Compose projects, swarms, faults.

Imported as ``tests.support.<module>`` from the repository root (pytest puts it on the path;
the benchmarks run as ``python -m bench.<script>``), so nothing edits ``sys.path`` to reach it.
"""
