"""Explain: latent traversals between conditions, their rendering, latent analysis, projection."""
