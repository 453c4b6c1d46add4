"""Layers of the photo2cartoon / U-GAT-IT networks."""

from tfcartoon.layers.cam import CAMScore
from tfcartoon.layers.normalization import LIN, InstanceNorm, SoftAdaLIN, UnitInterval
from tfcartoon.layers.padding import ReflectionPad2D
from tfcartoon.layers.routing import GroupSwitch

__all__ = ["CAMScore", "GroupSwitch", "InstanceNorm", "LIN", "ReflectionPad2D", "SoftAdaLIN",
           "UnitInterval"]
