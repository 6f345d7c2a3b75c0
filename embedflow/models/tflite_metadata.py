"""TFLite model metadata: the class names and the input's meaning carried inside the .tflite file.

An image classifier exported by embedflow takes uint8 RGB pixels (preprocessing is inside the model) and
returns softmax probabilities. Without metadata a consumer such as MediaPipe Tasks' ``ImageClassifier``
sees only class indices. :func:`add_metadata` embeds, in the format of the published TFLite metadata
schema (``metadata_schema.fbs``, file identifier ``M001``) that MediaPipe, the TFLite Support library and
Android Studio read:

* the model's name, version, description and author;
* the input: an RGB image, its normalisation stated as the identity (mean 0, std 1: the model normalises
  inside) and its value range 0..255;
* the output: probabilities in 0..1, with the label file ``labels.txt`` attached as
  ``TENSOR_AXIS_LABELS`` (one class name per line, in output column order).

The metadata is a flatbuffer stored in one of the model's buffers and named ``TFLITE_METADATA`` in the
model's ``metadata`` list; the label file lives in a zip archive appended to the model flatbuffer (as the
official ``MetadataPopulator`` writes it). Interpreters ignore both: the model computes exactly as before.

No maintained metadata writer installs beside this project's TensorFlow (tflite-support 0.4.4 requires
protobuf < 4; MediaPipe 1.x ships its writers without the native module they import), so the metadata
flatbuffer is written and read here with the ``flatbuffers`` runtime, field by field after the schema
(version 1.5.0; every field used exists since parser version 1.0.0). The model flatbuffer itself is
rewritten with LiteRT's generated schema classes (``ai_edge_litert.schema_py_generated``).
"""

from __future__ import annotations

import io
import zipfile

from ..errors import ModelError

LABEL_FILE = "labels.txt"
METADATA_NAME = "TFLITE_METADATA"  # the model metadata entry every metadata reader looks up
MIN_PARSER_VERSION = "1.0.0"  # the oldest metadata parser that understands every field written here
_MODEL_ID = b"TFL3"
_METADATA_ID = b"M001"

# metadata_schema.fbs: enum values and union tags used here
_COLOR_SPACE = {0: "UNKNOWN", 1: "RGB", 2: "GRAYSCALE"}
_RGB = 1
_TENSOR_AXIS_LABELS = 2
_FILE_TYPES = {0: "UNKNOWN", 1: "DESCRIPTIONS", 2: "TENSOR_AXIS_LABELS", 3: "TENSOR_VALUE_LABELS",
               4: "TENSOR_AXIS_SCORE_CALIBRATION", 5: "VOCABULARY", 6: "SCANN_INDEX_FILE"}
_CONTENT_FEATURE, _CONTENT_IMAGE = 1, 2  # union ContentProperties
_PROCESS_NORMALIZATION = 1  # union ProcessUnitOptions
# TFLite TensorType values (schema.fbs) of the tensors an image classifier can have
_TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 9: "int8"}


# --- the public API ------------------------------------------------------------------------------


def add_metadata(model: bytes, labels: list[str], *, name: str, version: str, description: str, author: str,
                 image_size: int, input_description: str, output_description: str) -> bytes:
    """Return ``model`` with TFLite image-classifier metadata and its label file packed in.

    Args:
        model: a TFLite flatbuffer (``bytes`` or ``bytearray``) of an image classifier with one input,
            ``(1, image_size, image_size, 3)`` uint8 (or float32 taking 0..255) RGB pixels, and one output,
            ``(1, len(labels))`` probabilities. Metadata or a label archive it already carries is replaced.
        labels: the class names in output column order; non-empty, distinct, one line each.
        name, version, description, author: the model's general information.
        image_size: the side of the square input image, in pixels (checked against the input tensor).
        input_description, output_description: what the input and output tensors hold, in words.

    Returns:
        bytes: the model flatbuffer with a ``TFLITE_METADATA`` buffer, followed by a zip archive holding
        ``labels.txt``. Its tensors, operators and weights are those of ``model``.

    Raises:
        ModelError: ``model`` is not a TFLite model, or its input or output does not fit (a second input,
            another image size, a tensor type MediaPipe cannot feed, a quantised input that does not take
            the pixels as they are, a label count other than the number of output columns).
        ValueError: ``labels`` is empty, has duplicates, blank names or names with line breaks.
    """
    _check_labels(labels)
    model = bytes(model)
    schema = _model_schema()
    obj = _unpack_model(model, schema)
    _check_io(obj, labels, image_size)
    meta = _build_metadata(name=name, version=version, description=description, author=author,
                           input_description=input_description, output_description=output_description)
    entries = [m for m in (obj.metadata or []) if _text(m.name) == METADATA_NAME]
    if entries:
        obj.buffers[entries[0].buffer].data = meta
        for extra in entries[1:]:
            obj.metadata.remove(extra)
    else:
        buf = schema.BufferT()
        buf.data = meta
        obj.buffers.append(buf)
        entry = schema.MetadataT()
        entry.name, entry.buffer = METADATA_NAME, len(obj.buffers) - 1
        obj.metadata = [*(obj.metadata or []), entry]
    flat = _pack_model(obj)
    out = io.BytesIO()
    out.write(flat)
    # mode "a" on bytes that are no zip appends a new archive after them, with offsets from the start of the
    # file: what the official populator writes and what MediaPipe and the TFLite Support readers expect
    # (files stored, not compressed, so readers can map them in place)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(LABEL_FILE, "".join(f"{label}\n" for label in labels))
    return out.getvalue()


def read_metadata(model: bytes) -> dict:
    """Read back what :func:`add_metadata` embeds.

    Args:
        model: the bytes of a ``.tflite`` file.

    Returns:
        dict with ``name``, ``version``, ``description``, ``author``, ``min_parser_version``,
        ``labels`` (list[str], read from the packed label file), ``associated_files`` (the names in the
        packed archive), ``input`` and ``output``. Each of the two is a dict: ``name``, ``description``,
        ``dtype`` and ``shape`` (of the model tensor), ``range`` (``{"min": [...], "max": [...]}`` or
        None); the input also has ``color_space`` and ``normalization`` (``{"mean": [...], "std": [...]}``
        or None), the output ``label_file`` (the ``TENSOR_AXIS_LABELS`` file named, or None).

    Raises:
        ModelError: one line when the bytes are not a TFLite model, the model carries no metadata, or its
            metadata or label archive is damaged.
    """
    model = bytes(model)
    if len(model) < 8 or model[4:8] != _MODEL_ID:
        raise ModelError("not a TFLite model (no TFL3 flatbuffer identifier)")
    try:
        schema = _model_schema()
        root = schema.Model.GetRootAs(model, 0)
        meta = None
        for i in range(root.MetadataLength()):
            entry = root.Metadata(i)
            if _text(entry.Name()) == METADATA_NAME:
                meta = _buffer_bytes(model, root.Buffers(entry.Buffer()))
                break
        graph = root.Subgraphs(0)
        tensors = [graph.Tensors(graph.Inputs(0)), graph.Tensors(graph.Outputs(0))]
        io_info = [{"dtype": _TENSOR_TYPES.get(t.Type(), f"type {t.Type()}"),
                    "shape": [int(d) for d in t.ShapeAsNumpy()]} for t in tensors]
    except ModelError:
        raise
    except Exception as e:  # flatbuffers has no verifier: a damaged file fails as some lookup error
        raise ModelError(f"damaged TFLite model: its flatbuffer cannot be read ({_why(e)})") from None
    if meta is None:
        raise ModelError(f"the TFLite model carries no metadata (no {METADATA_NAME} entry): export it again "
                         "with this version of embedflow")
    if len(meta) < 8 or meta[4:8] != _METADATA_ID:
        raise ModelError(f"damaged TFLite metadata: the {METADATA_NAME} buffer is not a metadata flatbuffer")
    try:
        info = _parse_metadata(meta)
    except Exception as e:
        raise ModelError(f"damaged TFLite metadata: its {METADATA_NAME} flatbuffer cannot be read ({_why(e)})"
                         ) from None
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as zf:
            names = zf.namelist()
            packed = {n: zf.read(n) for n in names}
    except Exception as e:  # BadZipFile, and what damaged members raise (encrypted flag, bad CRC, EOF, ...)
        raise ModelError(f"the TFLite model carries metadata but its packed files are missing or damaged "
                         f"({_why(e)})") from None
    label_file = info["output"]["label_file"]
    if label_file is None:
        raise ModelError("the TFLite metadata names no TENSOR_AXIS_LABELS file for the output")
    if label_file not in packed:
        raise ModelError(f"the TFLite metadata names the label file {label_file}, which is not packed in the model")
    try:
        labels = packed[label_file].decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ModelError(f"the packed label file {label_file} is not UTF-8 text") from None
    if io_info[1]["shape"][-1:] != [len(labels)]:
        raise ModelError(f"the packed label file {label_file} has {len(labels)} labels for an output of shape "
                         f"{io_info[1]['shape']}")
    info["input"].update(io_info[0])
    info["output"].update(io_info[1])
    return {**info, "labels": labels, "associated_files": names}


# --- the model flatbuffer ------------------------------------------------------------------------


def _model_schema():
    """The TFLite model schema's generated classes (object API), from LiteRT or else TensorFlow."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:  # an older ai-edge-litert without them
        from tensorflow.lite.python import schema_py_generated
    return schema_py_generated


def _why(error: Exception) -> str:
    """An exception as a short single line, for a one-line ModelError."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _text(value) -> str | None:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _buffer_bytes(model: bytes, buffer) -> bytes:
    if buffer.Offset() > 1:  # large models keep buffers after the flatbuffer, by offset and size
        return model[buffer.Offset():buffer.Offset() + buffer.Size()]
    return buffer.DataAsNumpy().tobytes() if buffer.DataLength() else b""


def _unpack_model(model: bytes, schema):
    if len(model) < 8 or model[4:8] != _MODEL_ID:
        raise ModelError("not a TFLite model (no TFL3 flatbuffer identifier)")
    try:
        obj = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    except Exception as e:
        raise ModelError(f"damaged TFLite model: its flatbuffer cannot be read ({_why(e)})") from None
    for buf in obj.buffers or []:
        if buf.offset and buf.offset > 1:  # inline what large models keep outside the flatbuffer
            buf.data, buf.offset, buf.size = model[buf.offset:buf.offset + buf.size], 0, 0
    return obj


def _pack_model(obj) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(obj.Pack(builder), file_identifier=_MODEL_ID)
    return bytes(builder.Output())


def _check_io(obj, labels: list[str], image_size: int) -> None:
    if not obj.subgraphs:
        raise ModelError("the TFLite model has no subgraph")
    graph = obj.subgraphs[0]
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ModelError(f"an image classifier has one input and one output; this TFLite model has "
                         f"{len(graph.inputs)} and {len(graph.outputs)}")
    inp, out = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    shape = [int(d) for d in inp.shape]
    if len(shape) != 4 or shape[1:] != [image_size, image_size, 3]:
        raise ModelError(f"the TFLite model's input is {shape}, not (1, {image_size}, {image_size}, 3) RGB pixels")
    if inp.type not in (0, 3):
        raise ModelError(f"the TFLite model's input is {_TENSOR_TYPES.get(inp.type, inp.type)}: MediaPipe feeds "
                         "uint8 or float32 images only")
    q = inp.quantization
    scale = [float(v) for v in (q.scale if q is not None and q.scale is not None else [])]
    zero = [int(v) for v in (q.zeroPoint if q is not None and q.zeroPoint is not None else [])]
    if any(abs(v - 1.0) > 1e-3 for v in scale) or any(zero):  # the pixels must go in as they are
        raise ModelError(f"the TFLite model's input is quantised (scale {scale}, zero point {zero}): MediaPipe "
                         "feeds raw pixels; keep the converter's input type as the model's (uint8 pixels)")
    out_shape = [int(d) for d in out.shape]
    if not out_shape or out_shape[-1] != len(labels):
        raise ModelError(f"the TFLite model's output is {out_shape}: {len(labels)} labels need "
                         f"{len(labels)} output columns")


def _check_labels(labels: list[str]) -> None:
    if not labels:
        raise ValueError("an image classifier needs at least one label")
    for label in labels:
        if not isinstance(label, str) or not label.strip() or "\n" in label or "\r" in label:
            raise ValueError(f"a label must be a non-blank string on one line: {label!r}")
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be distinct")


# --- the metadata flatbuffer (metadata_schema.fbs; field slots are their order in each table) ------


def _build_metadata(*, name, version, description, author, input_description, output_description) -> bytes:
    import flatbuffers

    b = flatbuffers.Builder(1024)

    def offsets(items):
        b.StartVector(4, len(items), 4)
        for item in reversed(items):
            b.PrependUOffsetTRelative(item)
        return b.EndVector()

    def floats(values):
        b.StartVector(4, len(values), 4)
        for v in reversed(values):
            b.PrependFloat32(float(v))
        return b.EndVector()

    def table(n_slots, offset_fields=(), byte_fields=()):
        b.StartObject(n_slots)
        for slot, value in offset_fields:
            b.PrependUOffsetTRelativeSlot(slot, value, 0)
        for slot, value in byte_fields:  # byte enums and union tags; 0 is every such field's default
            b.PrependUint8Slot(slot, value, 0)
        return b.EndObject()

    def stats(lo, hi):  # table Stats { max:[float]; min:[float]; }
        mx, mn = floats([hi]), floats([lo])
        return table(2, [(0, mx), (1, mn)])

    # input: TensorMetadata { name, description, dimension_names, content, process_units, stats, associated_files }
    in_name, in_desc = b.CreateString("image"), b.CreateString(input_description)
    image_props = table(2, byte_fields=[(0, _RGB)])  # ImageProperties { color_space; default_size }
    in_content = table(3, [(1, image_props)], [(0, _CONTENT_IMAGE)])  # Content { type; properties; range }
    mean, std = floats([0.0]), floats([1.0])
    norm = table(2, [(0, mean), (1, std)])  # NormalizationOptions { mean; std }
    unit = table(2, [(1, norm)], [(0, _PROCESS_NORMALIZATION)])  # ProcessUnit { options_type; options }
    units = offsets([unit])
    # the pixels' range; a float input takes 0..255 too, normalised (identity) inside the model
    in_stats = stats(0.0, 255.0)
    input_md = table(7, [(0, in_name), (1, in_desc), (3, in_content), (4, units), (5, in_stats)])

    # output: probabilities, the label file attached
    out_name, out_desc = b.CreateString("probability"), b.CreateString(output_description)
    features = table(0)  # FeatureProperties {}
    out_content = table(3, [(1, features)], [(0, _CONTENT_FEATURE)])
    out_stats = stats(0.0, 1.0)
    file_name = b.CreateString(LABEL_FILE)
    file_desc = b.CreateString("Labels for categories that the model can recognize.")
    label_file = table(5, [(0, file_name), (1, file_desc)], [(2, _TENSOR_AXIS_LABELS)])
    files = offsets([label_file])
    output_md = table(7, [(0, out_name), (1, out_desc), (3, out_content), (5, out_stats), (6, files)])

    # SubGraphMetadata { name, description, input_tensor_metadata, output_tensor_metadata, ... }
    inputs, outputs = offsets([input_md]), offsets([output_md])
    subgraph = table(4, [(2, inputs), (3, outputs)])
    # ModelMetadata { name, description, version, subgraph_metadata, author, license, associated_files,
    #                 min_parser_version }
    m_name, m_desc, m_version = b.CreateString(name), b.CreateString(description), b.CreateString(version)
    m_author, m_parser = b.CreateString(author), b.CreateString(MIN_PARSER_VERSION)
    subgraphs = offsets([subgraph])
    root = table(8, [(0, m_name), (1, m_desc), (2, m_version), (3, subgraphs), (4, m_author), (7, m_parser)])
    b.Finish(root, file_identifier=_METADATA_ID)
    return bytes(b.Output())


class _Table:
    """Read access to one table of a flatbuffer by field slot (no generated code needed)."""

    def __init__(self, buf: bytearray, pos: int):
        from flatbuffers.table import Table

        self._t = Table(buf, pos)

    @classmethod
    def root(cls, buf: bytes) -> _Table:
        from flatbuffers import encode, packer

        data = bytearray(buf)
        return cls(data, encode.Get(packer.uoffset, data, 0))

    def _offset(self, slot: int) -> int:
        return self._t.Offset(4 + 2 * slot)

    def string(self, slot: int) -> str | None:
        o = self._offset(slot)
        return self._t.String(o + self._t.Pos).decode("utf-8") if o else None

    def byte(self, slot: int) -> int:
        from flatbuffers import number_types

        o = self._offset(slot)
        return int(self._t.Get(number_types.Uint8Flags, o + self._t.Pos)) if o else 0

    def table(self, slot: int) -> _Table | None:
        o = self._offset(slot)
        return _Table(self._t.Bytes, self._t.Indirect(o + self._t.Pos)) if o else None

    def tables(self, slot: int) -> list[_Table]:
        o = self._offset(slot)
        if not o:
            return []
        start = self._t.Vector(o)
        return [_Table(self._t.Bytes, self._t.Indirect(start + 4 * i)) for i in range(self._t.VectorLen(o))]

    def floats(self, slot: int) -> list[float] | None:
        from flatbuffers import number_types

        o = self._offset(slot)
        if not o:
            return None
        start = self._t.Vector(o)
        return [float(self._t.Get(number_types.Float32Flags, start + 4 * i)) for i in range(self._t.VectorLen(o))]


def _parse_metadata(meta: bytes) -> dict:
    root = _Table.root(meta)
    graphs = root.tables(3)
    if not graphs:
        raise ValueError("no subgraph metadata")
    inputs, outputs = graphs[0].tables(2), graphs[0].tables(3)
    if not inputs or not outputs:
        raise ValueError("no input or output tensor metadata")
    return {"name": root.string(0), "description": root.string(1), "version": root.string(2),
            "author": root.string(4), "min_parser_version": root.string(7),
            "input": _tensor_info(inputs[0], image=True), "output": _tensor_info(outputs[0], image=False)}


def _tensor_info(t: _Table, *, image: bool) -> dict:
    stats = t.table(5)
    info = {"name": t.string(0), "description": t.string(1),
            "range": {"min": stats.floats(1), "max": stats.floats(0)} if stats else None}
    if image:
        content = t.table(3)
        props = content.table(1) if content and content.byte(0) == _CONTENT_IMAGE else None
        info["color_space"] = _COLOR_SPACE.get(props.byte(0), "UNKNOWN") if props else None
        info["normalization"] = None
        for unit in t.tables(4):
            if unit.byte(0) == _PROCESS_NORMALIZATION:
                opts = unit.table(1)
                info["normalization"] = {"mean": opts.floats(0), "std": opts.floats(1)}
    else:
        files = [(f.string(0), _FILE_TYPES.get(f.byte(2), "UNKNOWN")) for f in t.tables(6)]
        info["label_file"] = next((n for n, kind in files if kind == "TENSOR_AXIS_LABELS"), None)
    return info
