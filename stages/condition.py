"""StyleFlow's 17-dim condition vector: the one layout the attribute stage writes and StyleFlow reads.

``[9 SH light | Gender, Glasses, Yaw, Pitch, Baldness, Beard, Age, Expression]``
(pipeline.md 2.2 and 2.3), in FFHQ-UV's units: SH in DPR's order; Gender 1 = male;
Glasses 0/1; Yaw and Pitch in degrees (Face-API signs); Baldness and Beard in [0, 1];
Age in years; Expression = smile in [0, 1]. The manifest column ``attribute_vector``,
the edit stage's ``edit_attribute_<view>``, the StyleFlow network and the report all
use these names and indices.
"""

from __future__ import annotations

NUM_LIGHT = 9  # second-order spherical harmonics, DPR's order
LIGHT = slice(0, NUM_LIGHT)
ATTRIBUTE_NAMES: tuple[str, ...] = ("Gender", "Glasses", "Yaw", "Pitch", "Baldness", "Beard", "Age", "Expression")
VECTOR_SIZE = NUM_LIGHT + len(ATTRIBUTE_NAMES)  # 17
# Attribute name -> its index in the vector (Gender 9 ... Expression 16).
ATTRIBUTE_INDEX: dict[str, int] = {name: NUM_LIGHT + i for i, name in enumerate(ATTRIBUTE_NAMES)}
# A label per value, for reports and tables.
LABELS: tuple[str, ...] = (*(f"Light SH{i}" for i in range(NUM_LIGHT)), *ATTRIBUTE_NAMES)
