"""Retrieval methods: one file each, registered by name in `semshare.registry.METHODS` on import.

`base.py` is the protocol every method follows; `losses.py` the losses several methods share. What a user
runs is a recipe, `configs/method/NAME.yaml` (a registered method + its settings: `ours`, `st`, `wo_c`,
...); a registered method without a recipe runs with its defaults. Which recipes an experiment runs is
decided above, in `semshare.experiments.paper`.
"""

from semshare.methods import (cca, dcca, dcmh, dscmr, jfssl, label_gcn, lcfs, ridge, scml,  # noqa: F401
                              semantic_sharing, vilbert)

# what `semshare train` runs without --method, and the registered method behind it (named in registry.py)
from semshare.registry import DEFAULT_METHOD, DEFAULT_RECIPE  # noqa: F401 (re-exported)
