"""Images on disk: discovery (discover), identity (hashing) and pixels (decode, pixels). The bottom layer:
it imports nothing of embedflow but its errors."""

from ..errors import BadImage
from .decode import MAX_JPEG_PIXELS, MAX_PIXELS, decode_bytes, load_image, read_image, sniff_format
from .discover import (IMAGE_EXTENSIONS, IMAGE_LIKE_EXTENSIONS, Discovery, Dropped, ImageRef, discover,
                       discover_inputs, discover_labelled, is_image_name, read_labels_csv, walk_images)
from .hashing import file_stat, hash_file, read_bytes
from .keys import key_path, key_problem, name_key
from .pixels import to_pixels
from .remote import RemotePath, bytes_read, is_url, source_id, source_path

__all__ = ["BadImage", "Discovery", "Dropped", "ImageRef", "IMAGE_EXTENSIONS", "IMAGE_LIKE_EXTENSIONS", "MAX_PIXELS",
           "MAX_JPEG_PIXELS", "decode_bytes", "discover", "discover_inputs", "discover_labelled", "file_stat",
           "hash_file", "is_image_name", "key_path", "key_problem", "name_key", "load_image", "read_bytes", "read_image", "read_labels_csv", "sniff_format",
           "to_pixels", "walk_images", "RemotePath", "bytes_read", "is_url", "source_id", "source_path"]
