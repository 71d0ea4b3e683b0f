"""Where benchmark cases come from: held-out ShapesWorld clips, or a user's dataset file."""

from __future__ import annotations

import json
from pathlib import Path

from specvid.bench.harness import BenchCase
from specvid.errors import InvalidRequestError
from specvid.shapesworld.clips import Clip, encode_clip_mp4, make_clip
from specvid.shapesworld.scorer import score_caption
from specvid.shapesworld.world import split_seeds


def zoo_cases(count: int, num_frames: int, size: int, directory: Path) -> list[BenchCase]:
    """`count` held-out clips written as mp4 into `directory`, each with its caption prompt.

    The answer's score is the fact F1 of the caption, so retention can be measured.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cases = []
    for seed in split_seeds("eval", count):
        clip = make_clip(seed, num_frames=num_frames, size=size)
        path = directory / f"clip-{seed}.mp4"
        path.write_bytes(encode_clip_mp4(clip))
        cases.append(BenchCase(path.stem, str(path), clip.caption_prompt, _caption_scorer(clip)))
    return cases


def _caption_scorer(clip: Clip):
    return lambda text: score_caption(text, clip).f1


def dataset_cases(path: Path, limit: int) -> list[BenchCase]:
    """Rows of a JSON-lines file, each `{"video": URI or path, "prompt": text}`; unscored.

    Relative paths are read from the file's directory.
    """
    cases = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            video, prompt = str(row["video"]), str(row["prompt"])
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidRequestError(f"{path}:{number}: expected {{\"video\": ..., \"prompt\": ...}} ({e})")
        if "://" not in video and not Path(video).is_absolute():
            video = str((path.parent / video).resolve())
        cases.append(BenchCase(f"row-{number}", video, prompt))
        if len(cases) == limit:
            break
    if not cases:
        raise InvalidRequestError(f"{path} holds no rows")
    return cases
