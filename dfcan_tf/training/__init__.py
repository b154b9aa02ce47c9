"""Training: data sources, trainers (plain and adversarial), the loop, its LR schedule, checkpoints, distribution."""
