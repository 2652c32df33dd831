"""From a source to batches: fetch (sources, downloads, the synthetic stand-in) -> store (decode every
image once into a memory-mapped array) -> split (train/val/test) -> loading and augmentation views.
"""
