"""Importers: the formats users arrive with -> the semshare dataset format (docs/DATA.md, docs/IMPORT.md).

Each importer streams its input into a temporary folder with `DatasetWriter`, validates the result with
`open_dataset`, and renames it into place: a failed import leaves nothing behind.
"""

IMPORT_FORMATS = ("precomp", "bottomup-tsv", "dcmh-mat", "split-mat", "coco")
