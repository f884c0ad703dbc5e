"""The kopf operator that reconciles FederatedTraining objects."""
