"""TensorFlow 1 checkpoints (`PREFIX.index` + `PREFIX.data-00000-of-00001`) read without TensorFlow.

The `.index` is a LevelDB-format table (TF's tensor bundle): a 48-byte footer points at the
index block, whose entries point at data blocks; each block is a run of prefix-compressed
key/value entries, an array of restart offsets and a 5-byte trailer (compression type, masked
crc32c). The "" key holds a BundleHeaderProto, every other key a BundleEntryProto (dtype,
shape, shard, offset, size, masked crc32c of the tensor's bytes). Tensors are raw
little-endian bytes in the data shard. Every size and checksum is verified, so a truncated or
corrupted file is a DataError naming it, never a numpy error.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from fusion.errors import DataError

_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
_TRAILER = 5
# tensorflow/core/framework/types.proto -> numpy (strings and resources are not plain bytes)
_DTYPES = {
    1: "<f4",
    2: "<f8",
    3: "<i4",
    4: "u1",
    5: "<i2",
    6: "i1",
    9: "<i8",
    10: "?",
    17: "<u2",
    19: "<f2",
    22: "<u4",
    23: "<u8",
}


# ---------------------------------------------------------------- crc32c (Castagnoli), masked as TF does


def _table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(0x82F63B78), t >> 1).astype(np.uint32)
    return t


_T = _table()
_TL = [int(v) for v in _T]
_LANE = 1024  # bytes per lane: big tensors are hashed as many lanes at once in numpy
_SHIFT_CACHE: dict[int, list[np.ndarray]] = {}


def _crc_py(data: bytes, crc: int = 0) -> int:
    """Raw register update (no init / final xor)."""
    t = _TL
    for byte in data:
        crc = t[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def _shift_tables(n: int) -> list[np.ndarray]:
    """The linear map 'feed n zero bytes' on the register, as four byte-indexed tables."""
    if n not in _SHIFT_CACHE:
        cols = np.array([1 << j for j in range(32)], dtype=np.uint32)
        for _ in range(n):
            cols = _T[cols & 0xFF] ^ (cols >> 8)
        tables = []
        bits = (np.arange(256)[:, None] >> np.arange(8)[None, :]) & 1  # 256 x 8
        for k in range(4):
            sel = np.where(bits.astype(bool), cols[None, 8 * k : 8 * k + 8], 0)
            tables.append(np.bitwise_xor.reduce(sel, axis=1).astype(np.uint32))
        _SHIFT_CACHE[n] = tables
    return _SHIFT_CACHE[n]


def crc32c(data: bytes) -> int:
    """Standard crc32c. Reflected CRCs are linear and leading zero bytes leave a zero register
    unchanged, so the data is zero-padded in front to whole lanes, each lane hashed from 0 in
    parallel, and the lanes folded with the 'shift by one lane' map; the 0xFFFFFFFF init is the
    same as xoring it into the first four bytes."""
    if len(data) < 4 * _LANE:
        return _crc_py(data, 0xFFFFFFFF) ^ 0xFFFFFFFF
    buf = bytearray(data)
    buf[:4] = (int.from_bytes(buf[:4], "little") ^ 0xFFFFFFFF).to_bytes(4, "little")
    arr = np.frombuffer(bytes((-len(buf)) % _LANE) + bytes(buf), dtype=np.uint8).reshape(-1, _LANE)
    reg = np.zeros(arr.shape[0], dtype=np.uint32)
    for i in range(_LANE):
        reg = _T[(reg ^ arr[:, i]) & 0xFF] ^ (reg >> 8)
    s0, s1, s2, s3 = _shift_tables(_LANE)
    total = 0
    for lane in reg.tolist():
        total = int(s0[total & 0xFF] ^ s1[(total >> 8) & 0xFF] ^ s2[(total >> 16) & 0xFF] ^ s3[total >> 24]) ^ lane
    return total ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------- protobuf wire format


def _varint(buf: bytes, pos: int, path: Path) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise DataError(f"{path}: corrupt index (bad varint)")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def decode_message(buf: bytes, path: Path) -> dict[int, list]:
    """field number -> values (ints for varint / fixed, bytes for length-delimited)."""
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, path)
        num, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos, path)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos, path)
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise DataError(f"{path}: corrupt index (protobuf wire type {wire})")
        if pos > len(buf) or num == 0:
            raise DataError(f"{path}: corrupt index (truncated protobuf field)")
        fields.setdefault(num, []).append(value)
    return fields


def _first(fields: dict[int, list], num: int, default=0):
    return fields.get(num, [default])[-1]


# ---------------------------------------------------------------- LevelDB table


def _block(buf: bytes, offset: int, size: int, path: Path) -> bytes:
    end = offset + size + _TRAILER
    if offset < 0 or end > len(buf) - _FOOTER:
        raise DataError(f"{path}: corrupt index (block at {offset}+{size} runs past the end)")
    contents, kind = buf[offset : offset + size], buf[offset + size]
    (stored,) = struct.unpack_from("<I", buf, offset + size + 1)
    if masked_crc32c(buf[offset : offset + size + 1]) != stored:
        raise DataError(f"{path}: corrupt index (block checksum mismatch at offset {offset})")
    if kind == 1:
        raise DataError(
            f"{path}: snappy-compressed index blocks are not supported (TF writes them "
            "uncompressed; re-save the checkpoint with TensorFlow)"
        )
    if kind != 0:
        raise DataError(f"{path}: corrupt index (unknown block compression {kind})")
    return contents


def _entries(block: bytes, path: Path) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise DataError(f"{path}: corrupt index (block too short)")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * restarts
    if limit < 0:
        raise DataError(f"{path}: corrupt index (bad restart array)")
    out, key, pos = [], b"", 0
    while pos < limit:
        shared, pos = _varint(block, pos, path)
        unshared, pos = _varint(block, pos, path)
        vlen, pos = _varint(block, pos, path)
        if shared > len(key) or pos + unshared + vlen > limit:
            raise DataError(f"{path}: corrupt index (bad block entry)")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        out.append((key, block[pos : pos + vlen]))
        pos += vlen
    return out


def _handle(value: bytes, path: Path) -> tuple[int, int]:
    off, pos = _varint(value, 0, path)
    size, _ = _varint(value, pos, path)
    return off, size


def read_table(path: Path) -> list[tuple[bytes, bytes]]:
    """All key/value pairs of a LevelDB-format table, in key order."""
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(buf) < _FOOTER or struct.unpack_from("<Q", buf, len(buf) - 8)[0] != _MAGIC:
        raise DataError(f"{path}: not a TensorFlow checkpoint index (no table footer; truncated?)")
    footer = buf[-_FOOTER:]
    _, pos = _varint(footer, 0, path)  # metaindex handle: TF writes no meta blocks
    _, pos = _varint(footer, pos, path)
    index = _block(buf, *_handle(footer[pos:], path), path)
    out = []
    for _, handle in _entries(index, path):
        out.extend(_entries(_block(buf, *_handle(handle, path), path), path))
    return out


# ---------------------------------------------------------------- tensor bundle


def resolve_prefix(path: str | Path) -> Path:
    """`.../model-11`, `.../model-11.index` or the data shard -> the prefix."""
    p = Path(path)
    for suffix in (".index", ".data-00000-of-00001", ".meta"):
        if p.name.endswith(suffix):
            return p.with_name(p.name[: -len(suffix)])
    return p


def read_checkpoint(prefix: str | Path, verify_crc: bool = True) -> dict[str, np.ndarray]:
    """name -> array of every tensor in a single-shard TF1 checkpoint."""
    prefix = resolve_prefix(prefix)
    index = prefix.with_name(prefix.name + ".index")
    if not index.is_file():
        raise DataError(f"{index}: file not found (give the checkpoint prefix, e.g. .../model-11)")
    entries = read_table(index)
    if not entries or entries[0][0] != b"":
        raise DataError(f"{index}: not a tensor bundle (no header entry)")
    header = decode_message(entries[0][1], index)
    shards = _first(header, 1, 1)
    if _first(header, 2, 0) != 0:
        raise DataError(f"{index}: big-endian checkpoints are not supported")
    if shards != 1:
        raise DataError(f"{index}: {shards} data shards; only single-shard checkpoints are supported")
    data_path = prefix.with_name(prefix.name + ".data-00000-of-00001")
    try:
        data = data_path.read_bytes()
    except OSError as exc:
        raise DataError(f"{data_path}: cannot read ({exc.strerror or exc})") from None
    out: dict[str, np.ndarray] = {}
    for key, value in entries[1:]:
        name = key.decode("utf-8", "replace")
        e = decode_message(value, index)
        dtype, offset, size = _first(e, 1), _first(e, 4), _first(e, 5)
        if 7 in e:
            raise DataError(f"{index}: {name} is stored as slices (partitioned variable); not supported")
        if dtype not in _DTYPES:
            raise DataError(f"{index}: {name} has dtype {dtype} (not a plain numeric tensor); not supported")
        shape = []
        for shape_msg in e.get(2, []):
            for dim in decode_message(shape_msg, index).get(2, []):
                shape.append(_first(decode_message(dim, index), 1))
        np_dtype = np.dtype(_DTYPES[dtype])
        if int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize != size:
            raise DataError(f"{index}: {name}: {size} bytes recorded for shape {shape} {np_dtype}")
        if offset + size > len(data):
            raise DataError(f"{data_path}: truncated ({len(data)} bytes; {name} needs bytes {offset}..{offset + size})")
        raw = data[offset : offset + size]
        if verify_crc and 6 in e and masked_crc32c(raw) != _first(e, 6):
            raise DataError(f"{data_path}: checksum mismatch for {name} (corrupt data file)")
        out[name] = np.frombuffer(raw, dtype=np_dtype).reshape(shape).copy()
    return out


__all__ = ["crc32c", "masked_crc32c", "read_checkpoint", "read_table", "resolve_prefix", "decode_message"]
