"""An out-of-tree bbi plug-in, used by the tests: each module adds one item to one of
bbi's registries through an entry point (``bbi_example_plugin-0.1.dist-info``)."""
