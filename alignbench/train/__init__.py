"""Training: the loop (`loop`), the backbones' budgets (`recipes`), the learning-rate schedule (`schedule`) and the
curves a run keeps (`tracking`)."""
