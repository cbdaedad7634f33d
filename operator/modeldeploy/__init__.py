"""modeldeploy: the ModelDeployment spec, planner, artifact store, CLI and operator."""

__version__ = "0.1.0"
