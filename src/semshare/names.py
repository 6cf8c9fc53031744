"""Names several layers share, each defined once, in a module that imports nothing (the command line shows
them without importing torch)."""

BEST, LAST = "best", "last"  # the two checkpoints a trained run keeps (a closed-form run has best/ only)
CHECKPOINTS = (BEST, LAST)
RANKINGS = ("combined", "label")  # the label space with the run's instance head (when it has one), or alone
SIDES = ("image", "text")  # what a gallery holds
SELECTION_METRIC = "ave/NDCG@500"  # the validation metric that selects a checkpoint (and a retrieval space)
