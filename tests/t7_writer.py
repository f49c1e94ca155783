"""A minimal writer of Torch7's binary serialisation (torch.save's default, 64-bit Linux: native
little-endian, 8-byte longs), for fixtures only: nil, numbers, strings, tables and float tensors,
the subset that Reed's get_embedding.lua writes for {raw_txt, fea_txt} caption files.

Layout (torch7 File.lua writeObject, generic/Tensor.c and Storage.c write):
  object  = int type, then by type: nil -; number double; string int length + bytes;
            table int ref-index, int pair count, (key object, value object) * count;
            torch int ref-index, string "V 1", string class name, then the class's own data
  tensor  = int ndim, long size[ndim], long stride[ndim], long storage offset (1-based), storage object
  storage = long element count, raw elements
"""

import struct

import numpy as np

NIL, NUMBER, STRING, TABLE, TORCH = 0, 1, 2, 3, 4


class _Writer:
    def __init__(self, tensor_type: str):
        self.out = bytearray()
        self.refs = 0
        self.tensor_type = tensor_type  # "Float" (torch.FloatTensor) or "Cuda" (torch.CudaTensor)

    def int(self, value: int):
        self.out += struct.pack("<i", value)

    def long(self, value: int):
        self.out += struct.pack("<q", value)

    def string(self, data: bytes):
        self.int(len(data))
        self.out += data

    def ref(self):
        self.refs += 1
        self.int(self.refs)

    def torch_header(self, class_name: str):
        self.int(TORCH)
        self.ref()
        self.string(b"V 1")
        self.string(class_name.encode())

    def obj(self, value):
        if value is None:
            self.int(NIL)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            self.int(NUMBER)
            self.out += struct.pack("<d", float(value))
        elif isinstance(value, (str, bytes)):
            self.int(STRING)
            self.string(value.encode() if isinstance(value, str) else value)
        elif isinstance(value, np.ndarray):
            self.tensor(value)
        elif isinstance(value, dict):
            self.table(list(value.items()))
        elif isinstance(value, (list, tuple)):
            self.table(list(enumerate(value, start=1)))  # Lua arrays are tables keyed 1..N
        else:
            raise TypeError(f"cannot write {type(value).__name__} as Torch7")

    def table(self, pairs):
        self.int(TABLE)
        self.ref()
        self.int(len(pairs))
        for key, value in pairs:
            self.obj(key)
            self.obj(value)

    def tensor(self, array: np.ndarray):
        array = np.ascontiguousarray(array, dtype="<f4")
        self.torch_header(f"torch.{self.tensor_type}Tensor")
        self.int(array.ndim)
        for size in array.shape:
            self.long(size)
        for stride in array.strides:
            self.long(stride // array.itemsize)
        self.long(1)
        self.torch_header(f"torch.{self.tensor_type}Storage")
        self.long(array.size)
        self.out += array.tobytes()


def t7_bytes(value, tensor_type: str = "Float") -> bytes:
    writer = _Writer(tensor_type)
    writer.obj(value)
    return bytes(writer.out)


def caption_file_bytes(captions, embeddings: np.ndarray, tensor_type: str = "Float") -> bytes:
    """What get_embedding.lua saves: {raw_txt = {caption, ...}, fea_txt = {1x1024 tensor, ...}}."""
    return t7_bytes({"raw_txt": list(captions), "fea_txt": [row[None, :] for row in embeddings]}, tensor_type)
