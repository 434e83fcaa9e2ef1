"""Writes a copy of a GGUF with every quantised tensor dequantised to F32: the same weights, but
llama.cpp then multiplies in F32 instead of re-quantising activations to 8 bits before each
product, so the model's output is a smooth function of its KV cache. bench:kv-codec --model f32
measures the codecs on it (BENCHMARKS.md: the perturbation floor).
    python3 dequantize.py <in.gguf> <out.gguf>
"""
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter


def main(src: str, dst: str) -> None:
    reader = GGUFReader(src)
    writer = GGUFWriter(dst, reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    for tensor in reader.tensors:
        shape = [int(x) for x in reversed(tensor.shape)]
        data = tensor.data if tensor.tensor_type == GGMLQuantizationType.F32 else gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        writer.add_tensor(tensor.name, np.asarray(data, dtype=np.float32).reshape(shape))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
