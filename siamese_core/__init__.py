"""siamese_core: decide whether two satellite or aerial tiles show the same place.

The library behind the command line (``python -m siamese_core``) and the Streamlit dashboard.
Importing it is cheap: TensorFlow is only imported by the modules that train or run a model
(``model``, ``losses``, ``train``, ``inference``).
"""

__version__ = "0.4.0"  # the one version number: pyproject.toml reads it
