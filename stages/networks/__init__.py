"""Networks of the GAN stages and their checkpoint loaders (StyleGAN2, e4e, StyleFlow).

Importing these modules imports torch: stage modules import them inside ``setup()``.
"""
