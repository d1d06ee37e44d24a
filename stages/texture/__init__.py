"""Texture completion: turning per-view UV unwraps into one complete 1024 UV map.

FFHQ-UV's step 4 after the unwrap (pipeline.md 2.4 (e)-(g)), one job per module:
``color`` (YUV colour matching), ``masks`` (box-filter erosion and soft blend
weights), ``poisson`` (sparse Poisson fill), ``pyramid`` (Laplacian-pyramid blend),
``template`` (the template UV map), ``merge`` (views -> corrected -> completed map)
and ``quality`` (per-sample metrics and filtering). All functions work on numpy
arrays in UV space, (H, W) masks and (H, W, 3) textures, and keep no state.
"""
