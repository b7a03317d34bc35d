"""SGLang: :mod:`.adapter` (launch flags), :mod:`.behaviour`, :mod:`.logformat` (the ``Decode batch`` line) and
:mod:`.eplb` (the ``sglang.srt.plugins`` routing patch).

Nothing is imported here: SGLang's scheduler processes import :mod:`.eplb` alone (stdlib and torch only).
"""
