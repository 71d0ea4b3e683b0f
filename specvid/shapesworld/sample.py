"""Write ShapesWorld eval clips to disk: one mp4 per clip plus a `samples.jsonl` index.

Each index line is a JSON object: name, file (relative to the index), seed, caption prompt,
reference caption, and the QA pairs (question, reference answer, kind, expected value, and for
multiple choice the options and the correct letter).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Union

from specvid.shapesworld.clips import Clip, encode_clip_mp4, make_clip
from specvid.shapesworld.world import split_seeds

INDEX_NAME = "samples.jsonl"
SAMPLE_CLIPS = 4  # the clips `make run` uploads, and `specvid bench-serve` asks for by default


def sample_name(seed: int) -> str:
    """The name of the sample clip of an eval seed (its file is NAME.mp4)."""
    return f"shapesworld-{seed}"


def sample_names(n: int = SAMPLE_CLIPS, seed0: int = 0) -> list[str]:
    """The names `write_samples(out, n, seed0)` writes, in order."""
    return [sample_name(seed) for seed in split_seeds("eval", n, start=seed0)]


def sample_record(name: str, file: str, clip: Clip) -> dict:
    """The index entry of one written clip."""
    return {
        "name": name,
        "file": file,
        "seed": clip.seed,
        "caption_prompt": clip.caption_prompt,
        "caption": clip.caption,
        "questions": [qa.question for qa in clip.qa],
        "answers": [qa.answer for qa in clip.qa],
        "qa": [
            {
                "question": qa.question,
                "answer": qa.answer,
                "kind": qa.kind,
                "value": qa.value,
                "options": list(qa.options),
                "letter": qa.letter,
            }
            for qa in clip.qa
        ],
    }


def write_samples(
    out_dir: Union[str, Path], n: int, seed0: int = 0, num_frames: int = 8, size: int = 112
) -> list[dict]:
    """Write the eval clips at offsets [seed0, seed0 + n) and their index; returns the records."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for seed in split_seeds("eval", n, start=seed0):
        clip = make_clip(seed, num_frames=num_frames, size=size)
        name = sample_name(seed)
        file = f"{name}.mp4"
        (out / file).write_bytes(encode_clip_mp4(clip))
        records.append(sample_record(name, file, clip))
    lines = "".join(json.dumps(record) + "\n" for record in records)
    (out / INDEX_NAME).write_text(lines, encoding="utf-8")
    return records
