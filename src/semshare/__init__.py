"""semshare: label-wise cross-modal retrieval with Semantic Sharing (Yang et al., IJCAI 2021)."""

__version__ = "0.1.0"
