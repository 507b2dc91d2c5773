"""psyau_graph: prior-guided, privacy-preserving micro-expression recognition on PyG."""

__version__ = "0.1.0"
