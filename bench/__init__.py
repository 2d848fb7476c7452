"""Benchmarks of the bridge (bench/README.md). Run them as modules from the checkout, e.g.
``python -m bench.load``, ``python -m bench.soak``; ``bench.lib`` is what they share."""
