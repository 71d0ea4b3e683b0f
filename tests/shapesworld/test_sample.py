"""Writing eval samples: mp4 files that decode, and an index that matches them."""

from __future__ import annotations

import json

from specvid.config import VideoLimits, VideoSampling
from specvid.shapesworld.clips import make_clip
from specvid.shapesworld.sample import INDEX_NAME, write_samples
from specvid.shapesworld.world import split_of
from specvid.video.decode import decode_video


def test_write_samples(tmp_path):
    records = write_samples(tmp_path / "out", n=3, seed0=2)
    lines = (tmp_path / "out" / INDEX_NAME).read_text().splitlines()
    assert [json.loads(line) for line in lines] == records
    assert len({r["name"] for r in records}) == 3
    for record in records:
        assert split_of(record["seed"]) == "eval"
        clip = make_clip(record["seed"])
        assert record["caption"] == clip.caption and record["caption_prompt"] == clip.caption_prompt
        assert record["questions"] == [qa.question for qa in clip.qa]
        assert record["answers"] == [qa.answer for qa in clip.qa]
        data = (tmp_path / "out" / record["file"]).read_bytes()
        frames = decode_video(data, VideoSampling(num_frames=8), VideoLimits()).frames
        assert frames.shape == (8, 112, 112, 3)
