"""Command-line tools that work on a run's outputs (``python -m sephnet.tools.<name>``).

* :mod:`sephnet.tools.plot_metrics`: loss, learning-rate and AP curves from ``metrics.json``.
"""
