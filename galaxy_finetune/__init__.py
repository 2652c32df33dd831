"""Fine-tune the pretrained Zoobot encoder on GalaxyMNIST, as a DVC pipeline, and analyse its mistakes."""
__version__ = "0.1.0"
