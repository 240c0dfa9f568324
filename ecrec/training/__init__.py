"""Fine-tuning inputs (Ray-free; ``training/`` runs them on Ray Train): datasets, splits, augmentation, batching."""
