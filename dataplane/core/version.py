"""The project's version: one place, read by the package, the CLI, the metrics and the build."""

VERSION = "0.2.0"
