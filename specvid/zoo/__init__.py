"""The embedded zoo: ShapesWorld data and, on top of it, the built-in models.

`shapesworld` draws seeded synthetic clips, `language` writes their captions and QA (exact
visual anchors, varied fillers), `scorer` grades answers against the ground truth without a
judge, `tokenizer` trains the zoo's byte-level BPE, and `sample` writes eval clips to disk.
"""
