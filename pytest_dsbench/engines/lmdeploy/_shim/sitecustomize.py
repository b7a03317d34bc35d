"""dsbench EPLB shim, put on PYTHONPATH by the launcher (pytest_dsbench.engines.lmdeploy.eplb.launch_env).

Python imports ``sitecustomize`` at start-up in every process (engine workers spawned by multiprocessing or
Ray inherit PYTHONPATH), so this installs the LMDeploy routing patch everywhere. It does nothing unless
DSBENCH_EPLB_MODE is set, then chains to any other ``sitecustomize`` further down sys.path.
"""

import os
import sys


def _dsbench_eplb_install() -> None:
    if (os.environ.get("DSBENCH_EPLB_MODE") or "off").lower() == "off":
        return
    from pytest_dsbench.engines.lmdeploy.eplb import install_import_hook

    install_import_hook()


def _dsbench_chain_sitecustomize() -> None:
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


_dsbench_eplb_install()
_dsbench_chain_sitecustomize()
