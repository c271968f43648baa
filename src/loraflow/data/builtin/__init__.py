"""The built-in data sets, one module per data set (seeded, standard library only)."""
