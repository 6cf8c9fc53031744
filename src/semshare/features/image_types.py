"""Image formats by their first bytes (never by a file name): what the server serves and what a query image
may be (`semshare search --image-file`, an upload to POST /search, the Python API's bytes)."""

from __future__ import annotations

from pathlib import Path

IMAGE_SIGNATURES = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"GIF87a", "image/gif"),
                    (b"GIF89a", "image/gif"), (b"BM", "image/bmp"))
FORMATS = "JPEG, PNG, GIF, BMP or WebP"


def media_type(head: bytes) -> str:
    """The media type of an image from its first 12 bytes ('' when it is not one of ours)."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for signature, kind in IMAGE_SIGNATURES if head.startswith(signature)), "")


def image_kind(path: Path) -> str:
    """The media type of an image file by its signature ('' when it is not an image we serve)."""
    try:
        with open(path, "rb") as handle:
            return media_type(handle.read(12))
    except OSError:
        return ""
