"""An out-of-tree bbi plug-in: one item per extension point, found by its entry points."""
