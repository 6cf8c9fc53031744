"""Names several layers share, each defined once, in a module that imports nothing (the command line shows
them without importing torch)."""

BEST, LAST = "best", "last"  # the two checkpoints a trained run keeps (a closed-form run has best/ only)
CHECKPOINTS = (BEST, LAST)
RANKINGS = ("combined", "label")  # the label space with the run's instance head (when it has one), or alone
SIDES = ("image", "text")  # what a gallery holds
SELECTION_METRIC = "ave/NDCG@500"  # the validation metric that selects a checkpoint (and a retrieval space)


def folder_name(name: str, what: str = "name") -> str:
    """A user-given name (a dataset's meta.json name, a method, a run label) as one safe path component:
    letters, digits, '.', '_' and '-' kept, anything else (separators, '..', NUL, spaces) as '_', no leading
    dot, at most 80 characters; a name that had to change gets 8 hex digits of its hash, so two different
    names never meet in one folder. Names already safe come back unchanged."""
    import hashlib
    import re

    text = str(name)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", text).lstrip(".") or "_"
    if safe != text or len(safe) > 80 or safe in (".", ".."):
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        safe = f"{safe[:70]}-{digest}"
    return safe
