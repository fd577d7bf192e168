"""The bottom layer: errors, configuration, the TensorFlow/Keras backend, file helpers (results published whole and
durably), process identity, locks that give up, the keys of cached results, and the sweep of what crashes leave.

Imports nothing else from the package; every other layer may import it.
"""
