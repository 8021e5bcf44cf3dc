"""An ``image_url`` of a chat message -> a PIL image, under the server's rules for where images may come from.

    data:image/png;base64,....     always (the image travels in the request)
    /path/img.png, file:///path    only under ``--allow-local-files DIR`` (the path, links resolved, inside DIR)
    http(s)://...                  only with ``--allow-remote-images`` (``fetch.py``: public addresses, limits)

Every image is at most ``max_bytes`` (encoded) and ``max_pixels`` (decoded), and must decode completely; any
failure is an ``APIError`` (400) naming the field (``ImagePart.param``) and the fix.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from PIL import Image

from qmamba.data.image import to_rgb
from qmamba.serve.errors import bad_request
from qmamba.serve.fetch import RemoteLimits, fetch_image_bytes
from qmamba.serve.schema import ImagePart


@dataclass
class ImagePolicy:
    max_bytes: int = 20 << 20
    max_pixels: int = 40_000_000
    local_dir: Path | None = None  # None: no local files
    remote: RemoteLimits | None = None  # None: no remote URLs


def load_image_part(part: ImagePart, policy: ImagePolicy) -> Image.Image:
    """The RGB image ``part`` refers to (see the module docstring)."""
    url, param = part.url.strip(), part.param
    scheme = url.split(":", 1)[0].lower() if ":" in url[:12] else ""
    if scheme == "data":
        data = _data_url_bytes(url, policy.max_bytes, param)
    elif scheme in ("http", "https"):
        if policy.remote is None:
            raise bad_request("remote image URLs are off on this server; send the image as a data: URL "
                              "(data:image/png;base64,...), or start the server with --allow-remote-images", param,
                              "remote_images_disabled")
        data = fetch_image_bytes(url, policy.remote, param)
    elif scheme in ("", "file"):
        data = _local_bytes(url, policy, param)
    else:
        raise bad_request(f"image URL scheme {scheme!r}: use a data: URL (data:image/png;base64,...)", param,
                          "invalid_image_url")
    return decode_image(data, policy, param)


def decode_image(data: bytes, policy: ImagePolicy, param: str | None) -> Image.Image:
    """Bytes -> RGB image; a size over the limits or bytes that are not a whole image raise APIError(400)."""
    if len(data) > policy.max_bytes:
        raise _too_large(len(data), policy.max_bytes, param)
    image = _guarded(lambda: Image.open(io.BytesIO(data)), param)
    with image:
        width, height = image.size
        if width * height > policy.max_pixels:
            raise bad_request(f"the image is {width}x{height} pixels, more than the {policy.max_pixels} this server "
                              f"decodes; send a smaller image", param, "image_too_large")
        return _guarded(lambda: to_rgb(_loaded(image)), param)


def _loaded(image: Image.Image) -> Image.Image:
    image.load()  # decodes every pixel: a truncated file fails here
    return image


def _guarded(work, param: str | None):
    """``work()``, with PIL's failures on bad bytes as one APIError(400)."""
    try:
        return work()
    except Image.UnidentifiedImageError:
        raise bad_request("the image's bytes are not an image format PIL reads (PNG, JPEG, WebP, GIF, ...)", param,
                          "invalid_image") from None
    except Image.DecompressionBombError as e:
        raise bad_request(f"the image is too large to decode ({e})", param, "image_too_large") from None
    except Exception as e:  # PIL reports truncated or corrupt data as OSError, SyntaxError, struct.error, ...
        raise bad_request(f"the image is corrupt or truncated ({type(e).__name__})", param,
                          "invalid_image") from None


def _data_url_bytes(url: str, max_bytes: int, param: str) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep:
        raise bad_request("the data: URL has no ',' before its data; expected data:image/png;base64,...", param,
                          "invalid_image_url")
    fields = header[5:].split(";")
    media = fields[0].strip().lower()
    if not media.startswith("image/"):
        raise bad_request(f"the data: URL's media type is {media or 'missing'!r}, not an image; expected "
                          f"data:image/png;base64,... (or image/jpeg, image/webp, ...)", param, "invalid_image_url")
    if len(payload) * 3 // 4 > max_bytes:
        raise _too_large(len(payload) * 3 // 4, max_bytes, param)
    if "base64" not in (f.strip().lower() for f in fields[1:]):
        return unquote(payload).encode("latin-1", errors="replace")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("the data: URL's base64 data does not decode; check the encoding (standard base64, "
                          "with padding)", param, "invalid_image_url") from None


def _local_bytes(url: str, policy: ImagePolicy, param: str) -> bytes:
    if policy.local_dir is None:
        raise bad_request("local image paths are off on this server; send the image as a data: URL "
                          "(data:image/png;base64,...), or start the server with --allow-local-files DIR", param,
                          "local_files_disabled")
    raw = unquote(urlsplit(url).path) if url.lower().startswith("file:") else url
    root = policy.local_dir.resolve()
    try:
        path = (root / raw).resolve()  # an absolute raw path replaces root; links are followed, then checked
        inside = path.is_relative_to(root)
    except (OSError, ValueError):
        inside = False
    if not inside:
        raise bad_request(f"image path {raw!r} is outside the directory this server may read ({root}); give a path "
                          f"under it", param, "local_file_refused")
    if not path.is_file():
        raise bad_request(f"image path {raw!r}: no such file under {root}", param, "local_file_missing")
    size = path.stat().st_size
    if size > policy.max_bytes:
        raise _too_large(size, policy.max_bytes, param)
    return path.read_bytes()


def _too_large(size: int, limit: int, param: str | None):
    return bad_request(f"the image is {size} bytes, over this server's limit of {limit} bytes (--max-image-bytes); "
                       f"send a smaller or more compressed image", param, "image_too_large")
