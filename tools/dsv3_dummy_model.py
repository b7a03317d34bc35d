#!/usr/bin/env python3
"""A config-only DeepSeek-V3-architecture model at realistic MLA head sizes, for engines whose attention kernels
reject fixtures/tiny-r1's (q/k 96, v 32): config.json plus tiny-r1's tokenizer files, no weights; serve it with
random weights (``--engine-arg=--load-format --engine-arg=dummy`` on vLLM and SGLang).

    python3 tools/dsv3_dummy_model.py /tmp/dsv3-dummy

qk_nope 128, qk_rope 64, v 128, kv_lora 512, q_lora 768 as DeepSeek-V3; 4 layers (1 dense), hidden 1024,
16 heads, 16 routed experts top-4 in 4 groups (top-2 groups), 1 shared expert, tiny-r1's 397-token vocabulary.
The fixture_model checks (reference outputs) do not apply to it and skip.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

TINY = Path(__file__).resolve().parent.parent / "fixtures" / "tiny-r1"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


def config() -> dict[str, object]:
    base = json.loads((TINY / "config.json").read_text())
    base.update({
        "hidden_size": 1024, "intermediate_size": 2048, "moe_intermediate_size": 256,
        "num_attention_heads": 16, "num_key_value_heads": 16,
        "q_lora_rank": 768, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
        "num_hidden_layers": 4, "first_k_dense_replace": 1,
        "n_routed_experts": 16, "num_experts_per_tok": 4, "n_group": 4, "topk_group": 2, "n_shared_experts": 1,
    })
    return base


def write(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text(json.dumps(config(), indent=2) + "\n")
    for name in TOKENIZER_FILES:
        if (TINY / name).is_file():
            shutil.copy2(TINY / name, dest / name)
    return dest


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print(write(Path(sys.argv[1])))
