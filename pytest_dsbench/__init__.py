"""pytest-dsbench: a pytest plugin that gates DeepSeek-R1/V3 deployments.

It checks that a vLLM, SGLang or LMDeploy server speaks the OpenAI API correctly, that accuracy stays above its
floor, that the EPLB routing patch is equivalent to the reference, that the SLOs hold and the throughput
workloads meet their floors, and that nothing regressed against stored history.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
