"""Export of components to ONNX and TensorRT, parity checks, and runtimes for the artefacts.

Importing this package is cheap; torch, onnx and onnxruntime load when an export or a runtime
first needs them.
"""

from .graphs import Exportable, GraphExport
from .manifest import MANIFEST_FILE, read_manifest
from .onnx_export import ExportError, ExportResult, export_component
from .parity import ParityError, ParityReport, run_parity
from .spec import DEFAULT_TOLERANCES, PRECISIONS, Dim, ExportSpec, GraphSpec, Precision, TensorSpec, Tolerance

__all__ = [
    "DEFAULT_TOLERANCES",
    "MANIFEST_FILE",
    "PRECISIONS",
    "Dim",
    "ExportError",
    "ExportResult",
    "ExportSpec",
    "Exportable",
    "GraphExport",
    "GraphSpec",
    "ParityError",
    "ParityReport",
    "Precision",
    "TensorSpec",
    "Tolerance",
    "export_component",
    "read_manifest",
    "run_parity",
]
