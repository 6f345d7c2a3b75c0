"""Images on disk: discovery (discover), identity (hashing) and pixels (decode). The bottom layer:
it imports nothing of embedflow but its errors."""

from ..errors import BadImage
from .decode import MAX_JPEG_PIXELS, MAX_PIXELS, load_image
from .discover import (IMAGE_EXTENSIONS, ImageRef, discover_inputs, discover_labelled, is_image_name,
                       walk_images)
from .hashing import file_stat, hash_file
from .pixels import to_pixels

__all__ = ["BadImage", "ImageRef", "IMAGE_EXTENSIONS", "MAX_PIXELS", "MAX_JPEG_PIXELS", "discover_inputs",
           "discover_labelled", "file_stat", "hash_file", "is_image_name", "load_image", "to_pixels", "walk_images"]
