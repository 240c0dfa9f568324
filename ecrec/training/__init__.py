"""Fine-tuning inputs (Ray-free; the Ray Train drivers run them): datasets, splits, augmentation, batching."""
