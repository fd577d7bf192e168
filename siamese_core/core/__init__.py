"""The bottom layer: errors, configuration, the TensorFlow/Keras backend and small file helpers.

Imports nothing else from the package; every other layer may import it.
"""
