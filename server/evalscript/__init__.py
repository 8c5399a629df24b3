"""Evalscripts: declared inputs and outputs plus a vectorised evaluate over whole tiles.

Python evalscript files (trusted, from the configuration), inline expressions and Sentinel Hub
JavaScript evalscripts (V8 or their exact numpy runtime; the last two also from requests)
implement the same ``Evalscript`` contract.
"""

from server.evalscript.contract import Evalscript, InputSpec, OutputSpec, Samples, SampleType

__all__ = ["Evalscript", "InputSpec", "OutputSpec", "SampleType", "Samples"]
