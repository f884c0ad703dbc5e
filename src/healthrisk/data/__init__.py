"""Site data: the on-disk layout, its validation, and the synthetic generator."""
