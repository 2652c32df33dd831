"""What a trained model is used for: the predict and embed stages, and the galaxy-classify and
galaxy-similar commands (nearest neighbours in the embedding).
"""
