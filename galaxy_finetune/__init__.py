"""Fine-tune the pretrained Zoobot encoder on labelled galaxies, as a DVC pipeline, and analyse its mistakes.

The subpackages follow the pipeline: core (shared by all) -> data (fetch_data, store, split) -> training
(finetune_gpu) -> inference (predict, embed, galaxy-classify, galaxy-similar) -> analysis (analyse).
"""
__version__ = "0.1.0"
