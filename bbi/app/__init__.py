"""The application layer: the ``bbi`` command line (``bbi.app.cli``) and the ``bbi run``
pipeline (``bbi.app.pipeline``).

This is the one composition root. It is the only code that imports the sibling packages
(``probes``, ``discriminators``, ``distill``, ``reports``) together and wires them; each of
those depends on the core (``bbi`` outside ``bbi.app``) only, and the core depends on
nothing above it. The import-linter contracts in ``pyproject.toml`` (checked in CI by
``lint-imports``) keep it so; docs/architecture.md draws the layers.
"""
