"""What the models learn from and the loops that fit them, Ray-free: datasets, splits, augmentation,
batching, the fine-tuning data and evaluation, the probe and sequence loops. The Ray Train drivers
(the top-level ``training`` package) run them on workers; ``ecrec eval`` runs the sequence loop in
process."""
