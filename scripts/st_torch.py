"""st_torch.py: read and write safetensors files with only numpy and torch (the `safetensors`
package is not installed on these machines). The format is the one src/ckpt/safetensors.c reads and
writes: an 8-byte little-endian header length, a JSON header
{"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets"}, ...} padded with spaces to
a multiple of 8 bytes, then the raw little-endian data of each tensor, back to back.

    import st_torch
    st_torch.save(model.state_dict(), "m.safetensors", metadata={"arch": "resnet18"})
    model.load_state_dict(st_torch.load("m.safetensors"))   # strict, as cnntrain writes it
    st_torch.load_metadata("m.safetensors")                 # {"format": "cnntrain/1", ...}
    # save_file / load_file: the same under the names safetensors.torch uses

    python3 scripts/st_torch.py FILE    # list the metadata and tensors of a file
"""
import json
import os
import struct
import sys

import numpy as np
import torch

assert sys.byteorder == "little", "safetensors data is little-endian; this helper assumes the host is too"

_TORCH = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
          "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8, "BOOL": torch.bool}
_NAME = {v: k for k, v in _TORCH.items()}
# numpy has no bfloat16: its bytes travel as int16 and are reinterpreted by torch.
_NUMPY = {"F32": np.float32, "F16": np.float16, "BF16": np.int16, "F64": np.float64,
          "I64": np.int64, "I32": np.int32, "U8": np.uint8, "BOOL": np.bool_}
_HEADER_CAP = 100_000_000  # the reference implementation's limit


class SafetensorsError(ValueError):
    pass


def _raw(name, t):
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(t))
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(t).__name__}")
    t = t.detach().cpu().contiguous()
    if t.dtype not in _NAME:
        raise TypeError(f"{name}: dtype {t.dtype} is not one of {sorted(_TORCH)}")
    dtype = _NAME[t.dtype]
    if dtype == "BF16":
        t = t.view(torch.int16)
    return dtype, list(t.shape), t.numpy().tobytes()


def save(tensors, path, metadata=None):
    """Write {name: tensor} (in dict order) and {str: str} metadata atomically to path."""
    header, chunks, offset = {}, [], 0
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"metadata must map str to str; {k!r}: {v!r} does not")
        header["__metadata__"] = dict(metadata)
    for name, t in tensors.items():
        if name == "__metadata__":
            raise ValueError("a tensor may not be called __metadata__")
        dtype, shape, raw = _raw(name, t)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(text)))
            f.write(text)
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise SafetensorsError(f"{k!r} appears twice")
        d[k] = v
    return d


def _header(f, path, size):
    if size < 8:
        raise SafetensorsError(f"{path}: {size} bytes, too short for a safetensors file")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > _HEADER_CAP or n > size - 8:
        raise SafetensorsError(f"{path}: header length {n} does not fit the {size}-byte file")
    try:
        header = json.loads(f.read(n).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        raise SafetensorsError(f"{path}: bad header: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: the header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    data_size = size - 8 - n
    ranges = []
    for name, e in header.items():
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError(f"{path}: tensor {name!r}: entry must hold dtype, shape and data_offsets")
        if e["dtype"] not in _TORCH:
            raise SafetensorsError(f"{path}: tensor {name!r}: unsupported dtype {e['dtype']!r}")
        shape, offsets = e["shape"], e["data_offsets"]
        ints = lambda v: isinstance(v, list) and all(type(d) is int and d >= 0 for d in v)  # noqa: E731
        if not ints(shape) or not ints(offsets) or len(offsets) != 2 or not offsets[0] <= offsets[1] <= data_size:
            raise SafetensorsError(f"{path}: tensor {name!r}: bad shape {shape} or data_offsets {offsets} "
                                   f"(data section {data_size} bytes)")
        b, end = offsets
        if end - b != int(np.prod(shape, dtype=object)) * np.dtype(_NUMPY[e["dtype"]]).itemsize:
            raise SafetensorsError(f"{path}: tensor {name!r}: shape {shape} does not match data_offsets {[b, end]}")
        ranges.append((b, end))
    at = 0
    for b, end in sorted(ranges):
        if b != at:
            raise SafetensorsError(f"{path}: tensors do not tile the data section (gap or overlap at byte {at})")
        at = end
    if at != data_size:
        raise SafetensorsError(f"{path}: {data_size - at} bytes after the last tensor")
    return n, header, meta


def load_metadata(path):
    """The file's __metadata__ as {str: str}, reading only the header."""
    with open(path, "rb") as f:
        return _header(f, path, os.fstat(f.fileno()).st_size)[2]


def load(path):
    """{name: torch.Tensor} in file order (each tensor owns its memory)."""
    with open(path, "rb") as f:
        n, header, _ = _header(f, path, os.fstat(f.fileno()).st_size)
        data = f.read()
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        dt = np.dtype(_NUMPY[e["dtype"]])
        a = np.frombuffer(data, dtype=dt, count=(end - b) // dt.itemsize, offset=b) if end > b else np.empty(0, dt)
        a = a.reshape(e["shape"]).copy()
        t = torch.from_numpy(a)
        out[name] = t.view(torch.bfloat16) if e["dtype"] == "BF16" else t
    return out


# The names the `safetensors` package uses (safetensors.torch), so a script can use either.
def save_file(tensors, filename, metadata=None):
    save(tensors, filename, metadata)


def load_file(filename, device="cpu"):
    return {k: v.to(device) for k, v in load(filename).items()} if device != "cpu" else load(filename)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: st_torch.py FILE")
    for k, v in load_metadata(sys.argv[1]).items():
        print(f"meta {k} = {v}")
    for k, v in load(sys.argv[1]).items():
        print(f"{k} {_NAME[v.dtype]} {list(v.shape)}")
