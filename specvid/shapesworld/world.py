"""ShapesWorld: seeded procedural video clips of coloured shapes that move, appear, grow...

A clip is fully decided by an integer seed. `sample_clip_spec` draws a `ClipSpec` (background,
1-3 shape tracks) from a numpy Generator; `render_clip` draws it with Pillow;
`specvid.shapesworld.clips.make_clip` adds the caption and QA pairs. The spec and the text use two separate
random streams of the seed, so changing the grammar never changes the pictures.

Geometry is in fractions of the frame side, time in fractions of the clip (0 = first frame,
1 = last frame), so one spec renders at any size and frame count. Shapes are big (30-50 px
across at 112 px, two to three and a half 14 px patches; never under 20 px while growing or
shrinking) and drawn in flat saturated colours on dark or neutral backgrounds, so a model that
sees the frames at patch granularity can still tell them apart. Within a clip, colours are
distinct and shape kinds are distinct, so "the circle" or "the red shape" always names exactly
one shape.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageDraw

# The visual vocabulary. The names are also the words the grammar uses for them.
SHAPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (30, 200, 50),
    "blue": (40, 90, 255),
    "yellow": (250, 230, 30),
    "purple": (165, 50, 225),
    "orange": (255, 140, 0),
    "white": (245, 245, 245),
}
# Background colours share no name with shape colours, so a colour word alone says whether it
# describes the background or a shape.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (115, 115, 115),
    "brown": (95, 55, 25),
    "navy": (15, 25, 80),
}
SHAPE_KINDS: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")
MOTIONS: tuple[str, ...] = (
    "left", "right", "up", "down", "appear", "disappear", "grow", "shrink", "stay",
)  # fmt: skip
DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
}

MAX_SHAPES = 3
# Bounding radius (fraction of the frame side) by number of shapes: as large as still leaves
# room for three moving shapes that never touch.
RADIUS_RANGES: dict[int, tuple[float, float]] = {1: (0.18, 0.22), 2: (0.16, 0.20), 3: (0.14, 0.17)}
TRAVEL = 0.30  # how far a moving shape travels over the clip
SCALE_RANGE = (0.65, 1.0)  # grow: from the small end to the large; shrink: the reverse
# Appearing shapes pop in at one of these times. A grid rather than a continuous draw keeps two
# appearances on different frames at 8 or more frames, so "which appears first" stays visible.
APPEAR_TIMES = (0.25, 0.45, 0.65)
VANISH_RANGE = (0.40, 0.70)
EDGE_MARGIN = 0.02
GAP = 0.03  # minimum clearance between two shapes' bounding circles
PLACEMENT_TRIES = 50  # start positions tried per shape
LAYOUT_TRIES = 20  # fresh layouts tried per clip
# Times at which placement checks that shapes stay apart and inside the frame.
CHECK_TIMES = np.linspace(0.0, 1.0, 21)

Split = Literal["train", "eval"]
# Disjoint seed ranges, so no eval clip is ever trained on.
SPLIT_RANGES: dict[str, range] = {
    "train": range(0, 1_000_000_000),
    "eval": range(1_000_000_000, 1_100_000_000),
}
# Independent random streams derived from one seed.
SPEC_STREAM = 0
TEXT_STREAM = 1

# A fact is a flat tuple, e.g. ("shape", "circle", "color", "red") or ("count", 2).
Fact = tuple[Union[str, int], ...]


@dataclass(frozen=True)
class ShapeTrack:
    """One shape and what it does over the clip."""

    color: str
    kind: str
    radius: float  # bounding radius at full scale, fraction of the frame side
    start: tuple[float, float]  # centre (x, y) at time 0, fractions of the frame side
    motion: str
    appear_time: float = 0.0  # visible from this time on
    vanish_time: Optional[float] = None  # visible before this time (only "disappear")

    @property
    def name(self) -> str:
        """The referring expression, e.g. "red circle"; unique within a clip."""
        return f"{self.color} {self.kind}"

    def visible(self, t: float) -> bool:
        return t >= self.appear_time and (self.vanish_time is None or t < self.vanish_time)

    def geometry(self, t: float) -> tuple[float, float, float]:
        """Centre x, centre y and bounding radius at time t (whether visible or not)."""
        dx, dy = DIRECTIONS.get(self.motion, (0.0, 0.0))
        x, y = self.start[0] + dx * TRAVEL * t, self.start[1] + dy * TRAVEL * t
        small, large = SCALE_RANGE
        if self.motion == "grow":
            scale = small + (large - small) * t
        elif self.motion == "shrink":
            scale = large - (large - small) * t
        else:
            scale = large
        return x, y, self.radius * scale


@dataclass(frozen=True)
class ClipSpec:
    """Everything that decides a clip's pictures and facts. Tracks are in appearance order."""

    background: str
    tracks: tuple[ShapeTrack, ...]

    @property
    def count(self) -> int:
        return len(self.tracks)

    def first(self) -> Optional[ShapeTrack]:
        """The shape that appears strictly before all others, if there is one."""
        return _unique_extreme(self.tracks, first=True)

    def last(self) -> Optional[ShapeTrack]:
        """The shape that appears strictly after all others, if there is one."""
        return _unique_extreme(self.tracks, first=False)

    def facts(self) -> frozenset[Fact]:
        """The ground-truth facts a full caption states (see `specvid.shapesworld.scorer`)."""
        facts: set[Fact] = {("background", self.background), ("count", self.count)}
        for track in self.tracks:
            facts.add(("shape", track.kind, "color", track.color))
            facts.add(("shape", track.name, "motion", track.motion))
        for position, track in (("first", self.first()), ("last", self.last())):
            if track is not None:
                facts.add(("order", track.name, position))
        return frozenset(facts)


def _unique_extreme(tracks: tuple[ShapeTrack, ...], first: bool) -> Optional[ShapeTrack]:
    # Order only means something with two or more shapes and no tie at the extreme.
    if len(tracks) < 2:
        return None
    times = [track.appear_time for track in tracks]
    extreme = min(times) if first else max(times)
    winners = [track for track in tracks if track.appear_time == extreme]
    return winners[0] if len(winners) == 1 else None


def stream_rng(seed: int, stream: int) -> np.random.Generator:
    """An independent, reproducible Generator for one purpose (spec, text) of one seed."""
    return np.random.default_rng([int(seed), stream])


def split_seeds(split: Split, n: int, start: int = 0) -> range:
    """`n` seeds of a split, beginning at offset `start` within it."""
    if split not in SPLIT_RANGES:
        raise ValueError(f"unknown split {split!r}; known: {sorted(SPLIT_RANGES)}")
    seeds = SPLIT_RANGES[split]
    if n < 0 or start < 0 or start + n > len(seeds):
        raise ValueError(
            f"split {split!r} holds {len(seeds)} seeds; asked for offsets [{start}, {start + n})"
        )
    return seeds[start : start + n]



def draw_seeds(rng: np.random.Generator, pool: Sequence[int], n: int) -> list[int]:
    """`n` clip seeds drawn with replacement from `pool` (e.g. `split_seeds("train", ...)`)."""
    return [pool[int(i)] for i in rng.integers(len(pool), size=n)]

def split_of(seed: int) -> Optional[str]:
    """The split a seed belongs to, or None."""
    return next((name for name, seeds in SPLIT_RANGES.items() if seed in seeds), None)


def sample_clip_spec(rng: np.random.Generator) -> ClipSpec:
    """Draw a clip: background, 1-3 shapes of distinct colours and kinds, each with a motion."""
    background = str(rng.choice(list(BACKGROUNDS)))
    count = int(rng.integers(1, MAX_SHAPES + 1))
    colours = [str(c) for c in rng.choice(list(SHAPE_COLOURS), size=count, replace=False)]
    kinds = [str(k) for k in rng.choice(SHAPE_KINDS, size=count, replace=False)]
    # Appearing shapes take distinct times, so their order is never a tie.
    appear_times = iter(float(t) for t in rng.permutation(APPEAR_TIMES))
    drafts = []
    for colour, kind in zip(colours, kinds):
        motion = str(rng.choice(MOTIONS))
        drafts.append(
            ShapeTrack(
                color=colour,
                kind=kind,
                radius=float(rng.uniform(*RADIUS_RANGES[count])),
                start=(0.5, 0.5),  # placeholder; _layout picks the real start
                motion=motion,
                appear_time=next(appear_times) if motion == "appear" else 0.0,
                vanish_time=float(rng.uniform(*VANISH_RANGE)) if motion == "disappear" else None,
            )
        )
    placed = _layout(rng, drafts)
    ordered = sorted(placed, key=lambda track: track.appear_time)  # stable: ties keep draw order
    return ClipSpec(background=background, tracks=tuple(ordered))


def _layout(rng: np.random.Generator, drafts: list[ShapeTrack]) -> list[ShapeTrack]:
    """Start positions that keep every shape inside the frame and apart from the others.

    A layout that gets stuck restarts from scratch (an early shape in the middle can block the
    rest). If no full layout is found, the largest partial one wins: the clip has fewer shapes.
    """
    best: list[ShapeTrack] = []
    for _ in range(LAYOUT_TRIES):
        placed: list[ShapeTrack] = []
        for draft in drafts:
            track = _place(rng, draft, placed)
            if track is None:
                break
            placed.append(track)
        if len(placed) == len(drafts):
            return placed
        best = max(best, placed, key=len)
    return best


def _place(
    rng: np.random.Generator, draft: ShapeTrack, placed: list[ShapeTrack]
) -> Optional[ShapeTrack]:
    for _ in range(PLACEMENT_TRIES):
        start = (float(rng.uniform(0.0, 1.0)), float(rng.uniform(0.0, 1.0)))
        track = replace(draft, start=start)
        if _inside_frame(track) and all(_apart(track, other) for other in placed):
            return track
    return None


def _inside_frame(track: ShapeTrack) -> bool:
    for t in CHECK_TIMES:
        x, y, r = track.geometry(float(t))
        low, high = r + EDGE_MARGIN, 1.0 - r - EDGE_MARGIN
        if not (low <= x <= high and low <= y <= high):
            return False
    return True


def _apart(a: ShapeTrack, b: ShapeTrack) -> bool:
    # Checked at every time, visible or not: simpler, and never lets shapes touch.
    for t in CHECK_TIMES:
        ax, ay, ar = a.geometry(float(t))
        bx, by, br = b.geometry(float(t))
        if np.hypot(ax - bx, ay - by) < ar + br + GAP:
            return False
    return True


def frame_times(num_frames: int) -> np.ndarray:
    """Clip time of each frame: evenly spaced, first frame at 0, last at 1."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)


def render_clip(spec: ClipSpec, num_frames: int = 8, size: int = 112) -> np.ndarray:
    """Draw the clip as uint8 frames [T, size, size, 3]."""
    return render_frames(spec, frame_times(num_frames), size)


def render_frames(spec: ClipSpec, times: Sequence[float], size: int = 112) -> np.ndarray:
    """Draw the clip at the given clip times as uint8 frames [len(times), size, size, 3]."""
    return np.stack([_render_frame(spec, float(t), size) for t in times])


def _render_frame(spec: ClipSpec, t: float, size: int) -> np.ndarray:
    image = Image.new("RGB", (size, size), BACKGROUNDS[spec.background])
    draw = ImageDraw.Draw(image)
    for track in spec.tracks:
        if track.visible(t):
            x, y, r = track.geometry(t)
            _draw_shape(draw, track.kind, x * size, y * size, r * size, SHAPE_COLOURS[track.color])
    return np.asarray(image, dtype=np.uint8)


def _draw_shape(
    draw: ImageDraw.ImageDraw, kind: str, x: float, y: float, r: float, fill: tuple[int, int, int]
) -> None:
    # Each kind fills roughly its bounding circle, so sizes look comparable across kinds.
    if kind == "circle":
        draw.ellipse([x - 0.92 * r, y - 0.92 * r, x + 0.92 * r, y + 0.92 * r], fill=fill)
    elif kind == "square":
        half = 0.75 * r
        draw.rectangle([x - half, y - half, x + half, y + half], fill=fill)
    elif kind == "cross":
        arm, half = r, 0.34 * r
        draw.rectangle([x - arm, y - half, x + arm, y + half], fill=fill)
        draw.rectangle([x - half, y - arm, x + half, y + arm], fill=fill)
    else:
        draw.polygon(_polygon(kind, x, y, r), fill=fill)


def _polygon(kind: str, x: float, y: float, r: float) -> list[tuple[float, float]]:
    if kind == "triangle":
        # Equilateral, pointing up, centred on its centroid.
        angles, radii = np.deg2rad([-90.0, 30.0, 150.0]), [r] * 3
    elif kind == "diamond":
        angles, radii = np.deg2rad([-90.0, 0.0, 90.0, 180.0]), [r, 0.72 * r, r, 0.72 * r]
    elif kind == "star":
        # A fat inner radius keeps the five points readable at a few pixels each.
        angles = np.deg2rad(-90.0 + 36.0 * np.arange(10))
        radii = [r if i % 2 == 0 else 0.5 * r for i in range(10)]
    else:
        raise ValueError(f"unknown shape kind {kind!r}")
    return [(x + rad * np.cos(a), y + rad * np.sin(a)) for a, rad in zip(angles, radii)]


def clip_spec_for_seed(seed: int) -> ClipSpec:
    """The spec of a seed's clip (no rendering)."""
    return sample_clip_spec(stream_rng(seed, SPEC_STREAM))
