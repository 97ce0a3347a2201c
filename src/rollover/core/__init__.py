"""The pure core: values, policy arithmetic, state transitions and decisions; nothing here performs I/O.

Every function here takes what it needs (including ``now``) as arguments and returns values; the
controller applies them. ``tests/unit/test_import_contracts.py`` runs import-linter, whose
contracts in ``pyproject.toml`` fail the suite when a module here imports asyncio, the Docker SDK,
httpx, the network, the OS or any layer above the core.
"""
