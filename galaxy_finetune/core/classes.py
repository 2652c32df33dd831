"""The one place that names the classes."""

# GalaxyMNIST's integer labels 0..3, in the order of its release (and of galaxy-datasets' catalogs).
GALAXY_MNIST_CLASSES = ("smooth_round", "smooth_cigar", "edge_on_disk", "unbarred_spiral")
