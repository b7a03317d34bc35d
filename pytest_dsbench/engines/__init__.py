"""The engines under test: one package per engine, plus what every engine shares.

* :mod:`.registry` — the list of engines; everything that names an engine validates against it.
* :mod:`.adapters` — engine name -> adapter class, imported on first use.
* :mod:`.base` — ``EngineAdapter``, ``EngineBehaviour`` (declared divergences, known failures, version
  behaviours), ``EngineInfo``.
* :mod:`.command` — ``LaunchRequest`` and the one command builder that renders an adapter's flag table.
* :mod:`.launch` — ``launch_engine``: command, environment, EPLB settings and API key for one launched engine.
* :mod:`.launcher` — process handling: free port, process group, health wait, log capture, teardown.
* ``vllm/``, ``sglang/``, ``lmdeploy/`` — per engine: ``adapter`` (flag table), ``behaviour``, ``logformat``
  (its decode-throughput log lines) and ``eplb`` (the routing-patch hook that runs inside the engine).

Nothing is imported here: engine processes import ``pytest_dsbench.engines.<name>.eplb`` and must not pull in
pytest, pydantic or httpx on the way.
"""
