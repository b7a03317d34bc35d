"""The seeds' evaluation methods on top of the load generator: DeepLink (seed 000), ali and tencent (seed 003).

Each method turns a ``[throughput.NAME]`` entry of the hardware profile into load runs, returns the numbers
the conformance tests gate, and writes its results in the seed's own output format under
``<artifacts>/load/methods``.
"""

from __future__ import annotations
