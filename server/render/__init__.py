"""From scenes to bytes: admission (``admission.py``), mosaicking (``mosaic.py``), store breakers,
compositing (``composite.py``), the format rule (``formats.py``), encoders and legends."""
