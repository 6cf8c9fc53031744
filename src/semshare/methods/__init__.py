"""Retrieval methods: one file each, registered by name in `semshare.registry.METHODS` on import.

`base.py` is the protocol every method follows; `losses.py` the losses several methods share. What a user
runs is a recipe, `configs/method/NAME.yaml` (a registered method + its settings: `ours`, `st`, `wo_c`,
...); a registered method without a recipe runs with its defaults.
"""

from semshare.methods import cca, dcca, dscmr, jfssl, lcfs, ridge, scml, semantic_sharing, vilbert  # noqa: F401

# what `semshare train` runs without --method, and the registered method behind it
DEFAULT_RECIPE, DEFAULT_METHOD = "ours", "semantic_sharing"
# the paper's Figure 1 sweeps the consistency weight of this recipe (`semshare sweep`)
FIGURE1_RECIPE = "ours_con"
# the paper's Table 1 rows, in its order (recipes in configs/method/), then Ours retrieving with the pooled z
PAPER_TABLE_RECIPES = ("cca", "lcfs", "jfssl", "dcca", "dscmr", "scml", "vilbert", "st", "imc", "wo_r", "wo_t",
                       "wo_c", "wo_l", "ours_con", "ours", "ours_pooled")
# `semshare demo`: Ours against two of its ablations, and the ridge reference point
DEMO_RECIPES = ("ours", "wo_t", "wo_c", "ridge")
# linear methods on "deep features" (--linear-inputs deep) take them from this recipe's trained runs
DEEP_FEATURES_RECIPE = "st"
