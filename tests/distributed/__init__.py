"""Several processes launched for real (torchrun, accelerate launch, the sweep launchers) on the CPU."""
