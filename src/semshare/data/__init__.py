"""Datasets on disk: the one folder format, text vocabulary, word vectors and the synthetic generator."""
