"""Game-engine exporters: splat formats, glTF, levels, engine projects (``worldgen export``).

One module per format; each registers an ``Exporter`` (``exporters.registry``) whose function
returns bytes or a dict of files, and ``registry.write_export`` writes every result atomically
inside the output path.
"""

from .registry import (
    TARGETS,
    Exporter,
    ExportOptions,
    available_exporters,
    export_world,
    get_exporter,
    register_exporter,
    write_export,
)

__all__ = [
    "TARGETS",
    "ExportOptions",
    "Exporter",
    "available_exporters",
    "export_world",
    "get_exporter",
    "register_exporter",
    "write_export",
]
