"""Root conftest: pytester for the self-tests. The plugin itself loads through its pytest11 entry point."""

pytest_plugins = ["pytester"]
