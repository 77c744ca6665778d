"""Video embeddings: the VideoPrism encoder (JAX/Flax) and its checkpoints.

Nothing here is imported at ``napari_sbl`` start-up; ``embed.videoprism`` imports JAX when used.
"""
