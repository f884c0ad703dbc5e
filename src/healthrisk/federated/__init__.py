"""Federated training with Flower: the ClientApp/ServerApp and the local runner."""
