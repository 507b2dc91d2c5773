"""Flower adapters (ClientApp, ServerApp, strategies) over the framework-free federated core."""
