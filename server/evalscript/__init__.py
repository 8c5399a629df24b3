"""Evalscripts: declared inputs and outputs plus a vectorised evaluate over whole tiles.

Python evalscript files (trusted, from the configuration) and inline expressions (safe enough
for requests) implement the same ``Evalscript`` contract; JavaScript scripts will too.
"""

from server.evalscript.contract import Evalscript, InputSpec, OutputSpec, Samples, SampleType

__all__ = ["Evalscript", "InputSpec", "OutputSpec", "SampleType", "Samples"]
