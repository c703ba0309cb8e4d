"""A package outside bbi that adds extension-point items by entry point only.

It is what a third party would publish: modules with the items, and entry points in
``bbi_example_plugin-0.1.dist-info/entry_points.txt`` naming them in bbi's groups
(``bbi.adversaries``, ``bbi.strategies``, ...). bbi never imports it by name; the tests
put this directory on ``sys.path`` (the ``example_plugin`` fixture) as if it were
installed, and the registries find the items.
"""
