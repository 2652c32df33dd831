"""Benchmarks of the pipeline (pipeline.py) and of its training/predict throughput (throughput.py)."""
