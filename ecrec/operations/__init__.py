"""Operating ecrec: who may call what (``security``), online metrics with attribution, A/B experiments,
drift and its history, and retraining from what the shards logged."""
