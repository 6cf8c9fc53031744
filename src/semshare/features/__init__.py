"""Image features from raw images: pretrained backbones shipped on PyPI (offline) and the extractor."""
