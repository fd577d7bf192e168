"""Data: decoding images into tiles, the sources tiles come from, distortions, the dataset store, pairs of
tiles (by index and as labelled pair sets), uploads and the pairs CSV.

Imports only :mod:`siamese_core.core`.
"""
