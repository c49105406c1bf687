"""The load harness: ``python -m benchmarks.load`` (``make load``)."""
