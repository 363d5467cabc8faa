"""Image-file metadata: A1111 infotext and cheap probing/reading/writing of PNG, JPEG, WebP.

Qt-free and torch-free: the importer and the CLI use it on their hot paths.
"""

from charstudio.metadata.imagefile import (
    MAX_PIXELS,
    ImageFileError,
    ImageProbe,
    decode_exif_usercomment,
    encode_exif_usercomment,
    make_exif_bytes,
    probe_image,
    probe_image_bytes,
    read_infotext,
    read_infotext_bytes,
    write_png,
)
from charstudio.metadata.infotext import GenerationParams, format_infotext, parse_infotext

__all__ = [
    "MAX_PIXELS",
    "GenerationParams",
    "ImageFileError",
    "ImageProbe",
    "decode_exif_usercomment",
    "encode_exif_usercomment",
    "format_infotext",
    "make_exif_bytes",
    "parse_infotext",
    "probe_image",
    "probe_image_bytes",
    "read_infotext",
    "read_infotext_bytes",
    "write_png",
]
