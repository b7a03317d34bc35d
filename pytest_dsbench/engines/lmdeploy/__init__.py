"""LMDeploy: :mod:`.adapter` (launch flags), :mod:`.behaviour`, :mod:`.logformat` (its stat line) and :mod:`.eplb`
(the ``MoEGate`` routing patch, installed by the ``_shim/sitecustomize.py`` import hook).

Nothing is imported here: LMDeploy's processes import :mod:`.eplb` alone (stdlib and torch only).
"""
