"""eocube's zarr v3 codecs (``eocube.video``, ``eocube.linear``, ``eocube.lorenzo``),
registered in one place.

An installed eocube declares them in the ``zarr.codecs`` entry-point group
(pyproject.toml), so plain zarr finds them; importing this module also registers them
directly, for a source tree used without installing. Every eocube module that reads or
writes stores imports it.
"""

from __future__ import annotations

from zarr.registry import register_codec

from eocube.codec import CODEC_NAME as VIDEO_CODEC
from eocube.codec import VideoCodec
from eocube.labels import CODEC_NAME as LABELS_CODEC
from eocube.labels import LabelsCodec
from eocube.linear import CODEC_NAME as LINEAR_CODEC
from eocube.linear import LinearCodec
from eocube.lorenzo import CODEC_NAME as LORENZO_CODEC
from eocube.lorenzo import LorenzoCodec

CODECS = {
    VIDEO_CODEC: VideoCodec,
    LINEAR_CODEC: LinearCodec,
    LORENZO_CODEC: LorenzoCodec,
    LABELS_CODEC: LabelsCodec,
}
"""The codecs eocube adds to zarr, by name."""

for _name, _codec in CODECS.items():
    register_codec(_name, _codec)
