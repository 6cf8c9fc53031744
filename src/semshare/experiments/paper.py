"""The paper's experiments as recipe choices: which recipes make Table 1, Figure 1 and the demo.

Experiment choices live here, above the methods: a method file says what a method is, this file says which
recipes (configs/method/NAME.yaml) an experiment runs.
"""

# the paper's Table 1 rows, in its order, then Ours retrieving with the pooled z
PAPER_TABLE_RECIPES = ("cca", "lcfs", "jfssl", "dcca", "dscmr", "scml", "vilbert", "st", "imc", "wo_r", "wo_t",
                       "wo_c", "wo_l", "ours_con", "ours", "ours_pooled")
# a gathered table's row order (benchmarks/paper_table.py): Table 1's rows, then the ridge reference point
TABLE_ROW_ORDER = (*PAPER_TABLE_RECIPES, "ridge")
# the paper's Figure 1 sweeps the consistency weight of this recipe (`semshare sweep`)
FIGURE1_RECIPE = "ours_con"
# `semshare demo`: Ours against two of its ablations, and the ridge reference point
DEMO_RECIPES = ("ours", "wo_t", "wo_c", "ridge")
# linear methods on "deep features" (--linear-inputs deep) take them from this recipe's trained runs
DEEP_FEATURES_RECIPE = "st"
