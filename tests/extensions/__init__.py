"""Worked examples of the extension points (docs/MODEL.md): each file is what a contributor writes, whole."""
