"""decode_video and encode_video on real files made by PyAV (and a few that are not videos).

Each test clip numbers its frames by brightness (frame i is grey 10 + 10 i), so the decoded
frames say which source frames were sampled, in which order, through any codec.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from specvid.config import VideoLimits, VideoSampling
from specvid.errors import InvalidVideoError, TooLargeError
from specvid.video import DecodedVideo, decode_video, encode_video, spread_indices

LIMITS = VideoLimits()
CODECS = [("libx264", "mp4"), ("mpeg4", "mp4"), ("libvpx-vp9", "webm")]


def numbered_frames(count: int, width: int = 64, height: int = 48) -> np.ndarray:
    assert count <= 24, "brightness 10 + 10 i must stay below 255"
    levels = 10 + 10 * np.arange(count, dtype=np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).copy()


def frame_numbers(video: DecodedVideo) -> list[int]:
    return [round((mean - 10) / 10) for mean in video.frames.mean(axis=(1, 2, 3))]


def numbered_clip(count: int = 20, fps: float = 8, **kwargs) -> bytes:
    width, height = kwargs.pop("width", 64), kwargs.pop("height", 48)
    return encode_video(numbered_frames(count, width, height), fps=fps, **kwargs)


def by_count(num_frames: int, width: int = 32, height: int = 24) -> VideoSampling:
    return VideoSampling(num_frames=num_frames, width=width, height=height)


def by_rate(fps: float, width: int = 32, height: int = 24) -> VideoSampling:
    return VideoSampling(num_frames=None, fps=fps, width=width, height=height)


# --- sampling -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "count, num_frames, expected",
    [
        (20, 8, [0, 3, 5, 8, 11, 14, 16, 19]),
        (8, 8, list(range(8))),
        (9, 2, [0, 8]),
        (5, 1, [0]),
        (3, 8, [0, 0, 0, 1, 1, 1, 2, 2]),
        (1, 4, [0, 0, 0, 0]),
        (2, 5, [0, 0, 0, 1, 1]),
    ],
)
def test_spread_indices(count, num_frames, expected):
    assert spread_indices(count, num_frames).tolist() == expected


@pytest.mark.parametrize("codec, container_format", CODECS)
@pytest.mark.parametrize("width, height", [(64, 48), (160, 120)])
def test_num_frames_samples_spread_indices_in_order(codec, container_format, width, height):
    data = numbered_clip(
        20, codec=codec, container_format=container_format, width=width, height=height
    )
    video = decode_video(data, by_count(8), LIMITS)
    assert frame_numbers(video) == [0, 3, 5, 8, 11, 14, 16, 19]
    np.testing.assert_allclose(video.timestamps_s, np.array([0, 3, 5, 8, 11, 14, 16, 19]) / 8)
    assert video.source_size == (width, height)
    assert video.source_fps == pytest.approx(8)
    assert video.duration_s == pytest.approx(2.5)


def test_frames_are_rgb_uint8_in_the_requested_size():
    red_then_blue = np.zeros((2, 48, 64, 3), np.uint8)
    red_then_blue[0, ..., 0] = 200
    red_then_blue[1, ..., 2] = 200
    video = decode_video(encode_video(red_then_blue), by_count(2, width=56, height=28), LIMITS)
    assert video.frames.dtype == np.uint8
    assert video.frames.shape == (2, 28, 56, 3)
    red, blue = video.frames.mean(axis=(1, 2))
    assert red[0] > 150 and red[2] < 50
    assert blue[2] > 150 and blue[0] < 50


def unpadded_vp9_webm(frames: np.ndarray, fps: int = 8) -> bytes:
    """What encode_video would make, minus its padding to even sizes (vp9 takes odd ones)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="webm") as container:
        stream = container.add_stream("libvpx-vp9", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def test_odd_source_size_is_decoded_and_resized():
    data = unpadded_vp9_webm(numbered_frames(6, width=65, height=49))
    video = decode_video(data, by_count(6), LIMITS)
    assert video.frames.shape == (6, 24, 32, 3)
    assert video.source_size == (65, 49)
    assert frame_numbers(video) == list(range(6))


def test_fewer_frames_than_requested_repeat_evenly():
    video = decode_video(numbered_clip(3), by_count(8), LIMITS)
    assert frame_numbers(video) == [0, 0, 0, 1, 1, 1, 2, 2]
    np.testing.assert_allclose(video.timestamps_s, [0, 0, 0, 0.125, 0.125, 0.125, 0.25, 0.25])


@pytest.mark.parametrize("codec, container_format", CODECS)
def test_fps_samples_one_frame_per_period(codec, container_format):
    data = numbered_clip(20, fps=8, codec=codec, container_format=container_format)
    video = decode_video(data, by_rate(2), LIMITS)
    assert frame_numbers(video) == [0, 4, 8, 12, 16]
    np.testing.assert_allclose(video.timestamps_s, [0, 0.5, 1.0, 1.5, 2.0])


def test_fps_between_frames_takes_the_frame_on_screen():
    # 3 fps over 8 fps frames: times 0, 1/3, 2/3, ... fall at frames 0, 2.67, 5.33, ...
    video = decode_video(numbered_clip(20, fps=8), by_rate(3), LIMITS)
    assert frame_numbers(video) == [0, 2, 5, 8, 10, 13, 16, 18]


def test_fps_above_source_rate_repeats_frames():
    video = decode_video(numbered_clip(4, fps=8), by_rate(16), LIMITS)
    assert frame_numbers(video) == [0, 0, 1, 1, 2, 2, 3, 3]


def mp4_with_edit_list(frames: np.ndarray, hidden: int, fps: int = 8) -> bytes:
    """An mp4 whose first `hidden` frames sit before time 0: the muxer writes an edit list that
    hides them, while the sample table still counts every frame."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index - hidden, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buffer.getvalue()


def test_count_comes_from_the_frames_that_decode():
    data = mp4_with_edit_list(numbered_frames(20), hidden=3)
    with av.open(io.BytesIO(data)) as container:
        assert container.streams.video[0].frames == 20  # what the container declares
    video = decode_video(data, by_count(8), LIMITS)
    # Spread over the 17 visible frames 3..19, not over the 20 declared ones.
    assert frame_numbers(video) == [3, 5, 8, 10, 12, 14, 17, 19]
    assert video.timestamps_s[0] == 0


def test_single_frame_clip():
    data = numbered_clip(1)
    assert frame_numbers(decode_video(data, by_count(3), LIMITS)) == [0, 0, 0]
    assert frame_numbers(decode_video(data, by_rate(1), LIMITS)) == [0]


# --- encode_video ---------------------------------------------------------------------------


def test_odd_sizes_are_padded_for_x264():
    video = decode_video(numbered_clip(4, width=65, height=49), by_count(4), LIMITS)
    assert video.source_size == (66, 50)
    assert frame_numbers(video) == [0, 1, 2, 3]


def test_fractional_fps_is_kept():
    video = decode_video(numbered_clip(6, fps=29.97), by_count(6), LIMITS)
    assert video.source_fps == pytest.approx(29.97)


@pytest.mark.parametrize(
    "frames",
    [np.zeros((0, 16, 16, 3), np.uint8), np.zeros((2, 16, 16), np.uint8), np.zeros((2, 16, 16, 3))],
    ids=["no-frames", "no-channels", "float"],
)
def test_encode_refuses_malformed_frames(frames):
    with pytest.raises(ValueError):
        encode_video(frames)


# --- limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sampling, limits",
    [
        (by_count(4), VideoLimits(max_bytes=100)),
        (by_count(4), VideoLimits(max_duration_s=2.0)),
        (by_count(4), VideoLimits(max_pixels=64 * 48 - 1)),
        (by_count(8), VideoLimits(max_frames=4)),
        (by_rate(8), VideoLimits(max_frames=10)),
    ],
    ids=["bytes", "duration", "pixels", "frames-by-count", "frames-by-rate"],
)
def test_limits_are_enforced(sampling, limits):
    with pytest.raises(TooLargeError) as caught:
        decode_video(numbered_clip(20), sampling, limits)
    assert caught.value.status_code == 413


def test_duration_limit_holds_when_the_container_declares_none():
    # A raw h264 stream declares no duration (and no frame count): the frames' own times,
    # 20 frames at FFmpeg's assumed 25 fps, still trip the limit while decoding.
    data = numbered_clip(20, container_format="h264")
    assert frame_numbers(decode_video(data, by_count(4), LIMITS)) == [0, 6, 13, 19]
    with pytest.raises(TooLargeError, match="lasts") as caught:
        decode_video(data, by_count(4), VideoLimits(max_duration_s=0.5))
    assert caught.value.status_code == 413


# --- not videos -----------------------------------------------------------------------------


def png_image() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def audio_only_m4a() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("aac", rate=8000)
        for index in range(4):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 8000, index * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buffer.getvalue()


def hls_playlist_naming_a_local_file(tmp_path) -> bytes:
    segment = tmp_path / "segment.ts"
    segment.write_bytes(numbered_clip(4, container_format="mpegts"))
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:0.5,\n{segment}\n#EXT-X-ENDLIST\n".encode()


@pytest.mark.parametrize(
    "make_data",
    [
        lambda _: b"",
        lambda _: np.random.default_rng(0).bytes(4096),
        lambda _: bytes(4096),
        lambda _: b"just some text, not a video\n" * 20,
        lambda _: numbered_clip(20)[: len(numbered_clip(20)) // 2],
        lambda _: numbered_clip(20)[:64],
        lambda _: png_image(),
        lambda _: audio_only_m4a(),
        hls_playlist_naming_a_local_file,
    ],
    ids=["empty", "random", "zeros", "text", "truncated-half", "truncated-header", "png",
         "audio-only", "hls-playlist"],
)
@pytest.mark.parametrize("sampling", [by_count(4), by_rate(2)], ids=["by-count", "by-rate"])
def test_non_videos_are_invalid(make_data, sampling, tmp_path):
    with pytest.raises(InvalidVideoError) as caught:
        decode_video(make_data(tmp_path), sampling, LIMITS)
    assert caught.value.status_code == 400
    assert caught.value.message
