"""Search over the grid: the learning-rate ladder."""
