"""Judging a pair: the network's distance (:mod:`.inference`), the keypoint evidence (:mod:`.geometry`), the fused
verdict (:mod:`.fusion`), "is this tile like the training tiles?" (:mod:`.familiarity`), calibrating and
measuring a run on labelled pairs (:mod:`.calibration`), and the shape of a collection (:mod:`.collection`).

Imports :mod:`siamese_core.learn` and the layers below it.
"""
