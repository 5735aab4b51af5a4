"""Reads a TensorBoard log directory as TensorBoard itself does (the `tensorboard` package's
plugin event accumulator, which checks every record's CRCs and migrates summaries to the
scalar and image plugins) and prints, as JSON, each scalar tag's [step, value] points and
each image tag's [step, width, height] entries. An image whose bytes are not a PNG of the
size it declares is an error.

usage: python3 tests/tensorboard_read.py LOGDIR
"""

import json
import struct
import sys

from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.util import tensor_util

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data):
    """The width and height in a PNG's IHDR chunk."""
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return struct.unpack(">II", data[16:24])


def main(logdir):
    accumulator = plugin_event_accumulator.EventAccumulator(logdir, size_guidance={"tensors": 0})
    accumulator.Reload()
    scalars, images = {}, {}
    plugins = accumulator.ActivePlugins()
    for tag in accumulator.PluginTagToContent("scalars") if "scalars" in plugins else []:
        scalars[tag] = [
            [event.step, float(tensor_util.make_ndarray(event.tensor_proto))] for event in accumulator.Tensors(tag)
        ]
    for tag in accumulator.PluginTagToContent("images") if "images" in plugins else []:
        entries = []
        for event in accumulator.Tensors(tag):
            width, height, png = tensor_util.make_ndarray(event.tensor_proto)
            width, height = int(width), int(height)
            if png_size(png) != (width, height):
                raise ValueError(f"{tag} at step {event.step}: a PNG of {png_size(png)}, declared {width}x{height}")
            entries.append([event.step, width, height])
        images[tag] = entries
    print(json.dumps({"scalars": scalars, "images": images}))


if __name__ == "__main__":
    main(sys.argv[1])
