"""Videos in: a URI to bytes (`source`), bytes to sampled RGB frames (`decode`)."""

from specvid.video.decode import (
    DecodedVideo,
    decode_video,
    encode_video,
    spread_indices,
)
from specvid.video.source import fetch_video_bytes

__all__ = ["DecodedVideo", "decode_video", "encode_video", "fetch_video_bytes", "spread_indices"]
