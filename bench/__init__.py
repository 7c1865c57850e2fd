"""Measurement: latency, throughput and peak memory of bundles next to the transformers pipeline, and the
reports and regression gate made from them.

May import the runtime and calib (never torch at module level); export only lazily, for the PyTorch
reference's checkpoint. ``worker`` runs each runner in its own process and imports torch only for the
reference runners, so a distilrt runner's memory is the lean runtime's (tests/test_architecture.py checks it).
"""
