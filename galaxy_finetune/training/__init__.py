"""The finetune_gpu stage: the encoder's weights, the recipe, the linear probe, Zoobot's head, the
Lightning run, and the exported model (model_io, read back by every inference command).
"""
