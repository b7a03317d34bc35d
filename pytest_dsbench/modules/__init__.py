"""Seed 002's per-module microbenchmarks of DeepSeek-R1, with a roofline (issue 15).

* :mod:`.config` -- the model's dimensions (DeepSeek-R1's real config and a scaled-down ``ci`` one), the token
  counts and rounds of each scale, and how a scale is chosen.
* :mod:`.cost` -- FLOPs and bytes of every module, computed from the dimensions (the only place that does).
* :mod:`.roofline` -- the device's peaks, measured once per session, and a result's place under them.
* :mod:`.impl` -- the modules in plain torch (embed_tokens, MLP, expert, MoE with the noaux_tc gate, MLA
  prefill and absorbed decode, lm_head), on seeded random weights (:mod:`.weights`); :mod:`.fp8` -- block-FP8
  variants through vLLM's kernels when present, else the reason they cannot run.
* :mod:`.bench` -- one module timed with pytest-benchmark and recorded into the run's results (history and
  regression gate); :mod:`.suite` -- what ``tests/modules`` hands each test; :mod:`.table` -- the seed's tables
  from recorded or stored results.

torch is imported inside functions only; importing this package is cheap. The tests are ``tests/modules``
(marker ``modules``).
"""

from __future__ import annotations
