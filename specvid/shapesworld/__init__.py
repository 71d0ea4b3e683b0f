"""ShapesWorld: seeded synthetic clips of coloured shapes, their captions and QA, and a fact scorer.

The benchmark and the zoo's model cards measure on it; `lab/zoo` trains the shipped pairs on it.
"""
