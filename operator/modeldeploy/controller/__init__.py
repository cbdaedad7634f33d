"""The Kubernetes control plane: kopf handlers (handlers.py) over plain functions (the other modules)."""
