"""vLLM: :mod:`.adapter` (launch flags), :mod:`.behaviour`, :mod:`.logformat` (stat and iteration lines) and
:mod:`.eplb` (the ``vllm.general_plugins`` routing patch).

Nothing is imported here: vLLM's processes import :mod:`.eplb` alone (stdlib and torch only).
"""
