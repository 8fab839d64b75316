"""A model whose input takes any size, given one fixed size: what the manifest and the job's checks expect.

The daemon resizes every photo to the manifest's input_size and checks the
model takes exactly that, so a model exported with symbolic dimensions
("batch_size", "height", "width") is rewritten once, at fetch: each symbol
of its input becomes a number, wherever the graph uses it (input, outputs,
the shapes recorded between them). The weights and operators are untouched.

Needs the `onnx` package (the `modnet` extra), imported only here and only
when a fetch needs it.
"""

from __future__ import annotations

import sys


class FixedSizeError(Exception):
    """The model cannot be given a fixed size; one sentence saying why."""


def require_onnx(name: str) -> None:
    """Refuse, before anything is downloaded, when the onnx package is not there to fix the size."""
    try:
        import onnx  # noqa: F401 - only whether it imports
    except ImportError:
        raise FixedSizeError(
            f"fetching {name} needs the onnx package, to fix the model's input size: "
            f"pip install 'bgremover[modnet]' (or pip install onnx) into the Python bgremover runs from "
            f"({sys.executable})"
        ) from None


def fix_input_size(data: bytes, width: int, height: int) -> bytes:
    """The model in `data` with its one image input fixed to [1, 3, height, width]; serialized again."""
    import onnx

    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and onnx's own errors alike
        raise FixedSizeError(f"the model cannot be read by onnx: {exc}") from None
    if len(model.graph.input) < 1 or len(model.graph.input[0].type.tensor_type.shape.dim) != 4:
        raise FixedSizeError("the model does not take one image [batch, channels, height, width]")
    wanted = (1, 3, height, width)
    symbols = {}
    for dim, value in zip(model.graph.input[0].type.tensor_type.shape.dim, wanted):
        if dim.HasField("dim_param"):
            symbols[dim.dim_param] = value
        elif dim.dim_value != value:
            raise FixedSizeError(f"the model's input has {dim.dim_value} where {value} is needed")
    graph = model.graph
    for info in [*graph.input, *graph.output, *graph.value_info]:
        for dim in info.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in symbols:
                dim.dim_value = symbols[dim.dim_param]  # setting the value clears the symbol (a oneof)
    return model.SerializeToString()
