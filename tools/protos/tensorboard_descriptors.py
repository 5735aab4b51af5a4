"""Writes TensorBoard's event schema (event.proto and what it imports) as a serialized
FileDescriptorSet, from the descriptors `pip install tensorboard` carries, for tools/protos.

usage: python3 tools/protos/tensorboard_descriptors.py OUT.pb
"""

import sys

from google.protobuf import descriptor_pb2
from tensorboard.compat.proto import event_pb2

files, seen = [], set()


def add(file):
    if file.name in seen:
        return
    seen.add(file.name)
    for dependency in file.dependencies:
        add(dependency)
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    files.append(proto)


add(event_pb2.DESCRIPTOR)
with open(sys.argv[1], "wb") as out:
    out.write(descriptor_pb2.FileDescriptorSet(file=files).SerializeToString())
print(f"{len(files)} files: {', '.join(f.name for f in files)}")
