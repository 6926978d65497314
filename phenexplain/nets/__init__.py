"""Conditional StyleGAN2 networks whose parameters and numerics match NVlabs stylegan2-ada-pytorch.

`Generator` (mapping + skip synthesis) and `Discriminator` (residual, minibatch std, projection
conditioning) use the reference's attribute names, so a converted snapshot's state dict loads as
is. Any number of image channels (1 to 5 in Phenexplain) is supported.
"""

from phenexplain.nets.discriminator import Discriminator
from phenexplain.nets.generator import Generator

__all__ = ["Discriminator", "Generator"]
