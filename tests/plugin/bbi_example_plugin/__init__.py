"""An out-of-tree bbi plug-in: each module adds one item to one bbi registry, found
through the entry points of ``bbi_example_plugin-0.1.dist-info``."""
