"""Importers: the formats users arrive with -> the semshare dataset format (docs/DATA.md, docs/IMPORT.md).

Each importer streams its input into a temporary folder with `DatasetWriter`, validates the result with
`open_dataset`, and renames it into place: a failed import leaves nothing behind. Each file declares its
inputs (a dataclass of `option`s, importers/base.py) and registers an `ImportFormat` in
`semshare.registry.IMPORTERS` under its format name: `semshare import FORMAT` and its flags come from that.
"""

from semshare.importers import bottomup_tsv, coco, dcmh_mat, precomp, split_mat  # noqa: F401  (registers each)
