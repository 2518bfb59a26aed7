"""The per-host agent: the registry view, the pure reconcile and its application, the slow path,
the API (server, and client for the CLI and the runtimes), the process and the CLI's orchestration."""
