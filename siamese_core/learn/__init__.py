"""Learning: the Siamese model and its losses, the tf.data pipeline and training loop, the callbacks that
report to a run, the devices it trains on, and the pure-NumPy metrics (ROC, thresholds) training reports with.

Imports :mod:`siamese_core.runs`, :mod:`siamese_core.data` and :mod:`siamese_core.core`.
"""
