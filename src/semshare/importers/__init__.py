"""Importers: the formats users arrive with -> the semshare dataset format (docs/DATA.md, docs/IMPORT.md).

Each importer streams its input into a temporary folder with `DatasetWriter`, validates the result with
`open_dataset`, and renames it into place: a failed import leaves nothing behind. Each file registers its
import function in `semshare.registry.IMPORTERS` under its format name, the way index backends register.
"""

from semshare.importers import bottomup_tsv, coco, dcmh_mat, precomp, split_mat  # noqa: F401  (registers each)
