"""Video bytes to sampled, resized RGB frames (PyAV), and frames back to a video file.

Sampling (see docs/video.md):

- by ``num_frames``: frame indices spread evenly over every decoded frame, as
  ``round(linspace(0, count - 1, num_frames))``, so the first and last frames are always
  included. A clip with fewer frames than asked for repeats each frame evenly, in order
  (``floor(i * count / num_frames)``), so T always equals ``num_frames``.
- by ``fps``: at each time ``k / fps`` (k = 0, 1, ... while before the clip's end) the frame
  on screen then, i.e. the last one whose timestamp is not later. Asking for more than the
  source rate repeats frames.

Times are measured from the first decoded frame. Every frame is decoded (the last one is
always needed), but only sampled frames are converted to RGB and resized, by FFmpeg.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Optional

import av
import numpy as np

from specvid.config import VideoLimits, VideoSampling
from specvid.errors import InvalidVideoError, TooLargeError

_Container = av.container.InputContainer


@dataclass(frozen=True, eq=False)
class DecodedVideo:
    """Sampled frames of one video and what is known about its source."""

    frames: np.ndarray  # uint8 [T, H, W, 3], RGB, H x W = sampling.height x sampling.width
    timestamps_s: np.ndarray  # float64 [T], each frame's time from the first frame
    source_fps: float  # the stream's nominal rate, else the decoded frames' mean rate
    duration_s: float  # first frame's start to last frame's end, as decoded
    source_size: tuple[int, int]  # (width, height) of the source frames


def decode_video(data: bytes, sampling: VideoSampling, limits: VideoLimits) -> DecodedVideo:
    """Decode `data` (a whole video file) and sample frames as `sampling` says.

    Raises InvalidVideoError (400) for bytes that are not a decodable video, TooLargeError
    (413) when the file, its duration, its frame size or the sampled frame count exceeds
    `limits`.
    """
    if not data:
        raise InvalidVideoError("the video is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise TooLargeError(f"the video is {len(data)} bytes; the limit is {limits.max_bytes}")
    if sampling.num_frames is not None:
        _check_sampled_count(sampling.num_frames, limits)
        return _sample_by_count(data, sampling.num_frames, sampling, limits)
    assert sampling.fps is not None  # VideoSampling sets exactly one of the two
    return _sample_by_rate(data, sampling.fps, sampling, limits)


# --- sampling -------------------------------------------------------------------------------


@dataclass
class _Samples:
    """Frames picked during one decoding pass, plus what the pass learned about the clip."""

    nominal_fps: float
    frames: list[np.ndarray] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    decoded_count: int = 0
    end_s: float = 0.0
    source_size: tuple[int, int] = (0, 0)


def _sample_by_count(
    data: bytes, num_frames: int, sampling: VideoSampling, limits: VideoLimits
) -> DecodedVideo:
    expected = _count_frames(data, limits)
    samples = _decode_at(data, spread_indices(expected, num_frames), sampling, limits)
    if samples.decoded_count not in (expected, 0):
        # The container's count was off (edit lists, undecodable frames): sample again over
        # the frames that really decode.
        actual = spread_indices(samples.decoded_count, num_frames)
        samples = _decode_at(data, actual, sampling, limits)
    return _result(samples)


def spread_indices(count: int, num_frames: int) -> np.ndarray:
    """`num_frames` indices into `count` frames, evenly spread, first and last included.

    With fewer frames than asked for, each frame repeats evenly (n // count or one more times).
    """
    if count >= num_frames:
        return np.rint(np.linspace(0, count - 1, num_frames)).astype(np.int64)
    return np.arange(num_frames, dtype=np.int64) * count // num_frames


def _decode_at(
    data: bytes, indices: np.ndarray, sampling: VideoSampling, limits: VideoLimits
) -> _Samples:
    copies = np.bincount(indices)
    with _open_video(data, limits) as (container, stream):
        samples = _Samples(nominal_fps=_nominal_fps(stream))
        for index, (time_s, frame) in enumerate(_frames(container, stream, limits)):
            if index < len(copies):
                _take(samples, frame, time_s, int(copies[index]), sampling, limits)
            _note_decoded(samples, frame, time_s, index)
    return samples


def _sample_by_rate(
    data: bytes, fps: float, sampling: VideoSampling, limits: VideoLimits
) -> DecodedVideo:
    step_s = 1.0 / fps
    with _open_video(data, limits) as (container, stream):
        _check_rate_budget(_declared_duration_s(container, stream), fps, limits)
        samples = _Samples(nominal_fps=_nominal_fps(stream))
        previous: Optional[tuple[float, av.VideoFrame]] = None
        taken = 0  # sample times k * step_s already served
        for index, (time_s, frame) in enumerate(_frames(container, stream, limits)):
            if previous is not None:
                # The previous frame was on screen at every sample time before this one.
                due = _times_before(time_s, taken, step_s)
                _take(samples, previous[1], previous[0], due, sampling, limits)
                taken += due
            previous = (time_s, frame)
            _note_decoded(samples, frame, time_s, index)
        if previous is not None:
            # The last frame stays on screen until the clip ends; k = 0 is always sampled.
            due = max(_times_before(samples.end_s, taken, step_s), 1 - taken)
            _take(samples, previous[1], previous[0], due, sampling, limits)
    return _result(samples)


def _times_before(time_s: float, taken: int, step_s: float) -> int:
    """How many sample times k * step_s with k >= taken lie strictly before `time_s`."""
    # Rounding keeps float noise (2.5 s at 2 fps = 5.0000001 steps) from adding a sample.
    steps = math.ceil(round(time_s / step_s, 6))
    return max(0, steps - taken)


def _check_rate_budget(duration_s: Optional[float], fps: float, limits: VideoLimits) -> None:
    """Refuse before decoding when the declared duration already implies too many frames."""
    if duration_s is not None:
        _check_sampled_count(math.ceil(round(duration_s * fps, 6)), limits)


def _take(
    samples: _Samples,
    frame: av.VideoFrame,
    time_s: float,
    copies: int,
    sampling: VideoSampling,
    limits: VideoLimits,
) -> None:
    if copies <= 0:
        return
    _check_sampled_count(len(samples.frames) + copies, limits)
    rgb = frame.to_ndarray(format="rgb24", width=sampling.width, height=sampling.height)
    samples.frames.extend([rgb] * copies)
    samples.times.extend([time_s] * copies)


def _note_decoded(samples: _Samples, frame: av.VideoFrame, time_s: float, index: int) -> None:
    """Record what the newest decoded frame says about the clip's extent and size."""
    if index == 0:
        samples.source_size = (frame.width, frame.height)
    samples.decoded_count = index + 1
    samples.end_s = time_s + _frame_duration_s(frame, samples.nominal_fps)


def _result(samples: _Samples) -> DecodedVideo:
    if not samples.frames:
        raise InvalidVideoError("the video stream contains no decodable frames")
    return DecodedVideo(
        frames=np.stack(samples.frames),
        timestamps_s=np.asarray(samples.times, dtype=np.float64),
        source_fps=_source_fps(samples),
        duration_s=samples.end_s,
        source_size=samples.source_size,
    )


def _check_sampled_count(count: int, limits: VideoLimits) -> None:
    if count > limits.max_frames:
        raise TooLargeError(f"{count} sampled frames exceed the limit of {limits.max_frames}")


# --- container access -----------------------------------------------------------------------


@contextmanager
def _open_video(data: bytes, limits: VideoLimits) -> Iterator[tuple[_Container, av.VideoStream]]:
    """Open `data` from memory and pick its video stream; any FFmpeg error inside the block,
    at open, demux or decode, becomes an InvalidVideoError."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = _video_stream(container)
            _check_declared_limits(container, stream, limits)
            yield container, stream
    except av.FFmpegError as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise InvalidVideoError(f"the data is not a decodable video ({reason})") from None


def _video_stream(container: _Container) -> av.VideoStream:
    if _is_still_image_format(container.format.name):
        raise InvalidVideoError(f"this is a still image ({container.format.name}), not a video")
    for stream in container.streams.video:
        # Cover art in audio files shows up as a one-frame video stream.
        if not stream.disposition & av.stream.Disposition.attached_pic:
            if stream.codec_context is None:
                raise InvalidVideoError("the video codec is not supported")
            return stream
    raise InvalidVideoError("the file has no video stream (audio only, or not a video)")


def _is_still_image_format(format_name: str) -> bool:
    # FFmpeg's single-image demuxers: 'png_pipe', 'jpeg_pipe', ..., 'image2', 'image2pipe'.
    return format_name.endswith("_pipe") or format_name.startswith("image2")


def _check_declared_limits(
    container: _Container, stream: av.VideoStream, limits: VideoLimits
) -> None:
    """Fail fast on what the header declares; decoding checks the frames themselves again."""
    _check_pixels(stream.codec_context.width, stream.codec_context.height, limits)
    duration_s = _declared_duration_s(container, stream)
    if duration_s is not None:
        _check_duration(duration_s, limits)


def _check_pixels(width: int, height: int, limits: VideoLimits) -> None:
    if width * height > limits.max_pixels:
        raise TooLargeError(
            f"frames of {width}x{height} exceed the limit of {limits.max_pixels} pixels"
        )


def _check_duration(duration_s: float, limits: VideoLimits) -> None:
    if duration_s > limits.max_duration_s:
        raise TooLargeError(
            f"the video lasts {duration_s:.2f} s; the limit is {limits.max_duration_s} s"
        )


def _declared_duration_s(container: _Container, stream: av.VideoStream) -> Optional[float]:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _count_frames(data: bytes, limits: VideoLimits) -> int:
    """The frame count the container declares, else the number of video packets.

    Either can differ from what decodes; the caller checks against the decoded count.
    """
    with _open_video(data, limits) as (container, stream):
        count = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
    if count == 0:
        raise InvalidVideoError("the video stream contains no frames")
    return count


def _frames(
    container: _Container, stream: av.VideoStream, limits: VideoLimits
) -> Iterator[tuple[float, av.VideoFrame]]:
    """Decoded frames with their time from the first frame, checked against the limits."""
    nominal_fps = _nominal_fps(stream)
    origin_s: Optional[float] = None
    for index, frame in enumerate(container.decode(stream)):
        _check_pixels(frame.width, frame.height, limits)
        time_s = _frame_time_s(frame, index, nominal_fps)
        origin_s = time_s if origin_s is None else origin_s
        _check_duration(time_s - origin_s, limits)
        yield time_s - origin_s, frame


def _frame_time_s(frame: av.VideoFrame, index: int, nominal_fps: float) -> float:
    if frame.time is not None:
        return float(frame.time)
    # No timestamp: place the frame by its index at the nominal rate.
    return index / nominal_fps if nominal_fps > 0 else float(index)


def _frame_duration_s(frame: av.VideoFrame, nominal_fps: float) -> float:
    if frame.duration and frame.time_base is not None:
        return float(frame.duration * frame.time_base)
    return 1.0 / nominal_fps if nominal_fps > 0 else 0.0


def _nominal_fps(stream: av.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else 0.0


def _source_fps(samples: _Samples) -> float:
    if samples.nominal_fps > 0:
        return samples.nominal_fps
    return samples.decoded_count / samples.end_s if samples.end_s > 0 else 0.0


# --- encoding -------------------------------------------------------------------------------


def encode_video(
    frames: np.ndarray, fps: float = 8, codec: str = "libx264", container_format: str = "mp4"
) -> bytes:
    """Encode uint8 RGB frames [T, H, W, 3] as a yuv420p video file, in memory.

    yuv420p stores colour at half resolution and x264 refuses odd sizes, so an odd width or
    height is padded by repeating the last column or row: the file is then one pixel larger.
    """
    frames = _pad_to_even(_checked_frames(frames))
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder's delayed frames
    return buffer.getvalue()


def _checked_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or not len(frames):
        raise ValueError(
            f"expected uint8 frames [T, H, W, 3] with T >= 1, got {frames.dtype} {frames.shape}"
        )
    return frames


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
