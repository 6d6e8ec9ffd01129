"""Task data: the splits a run trains and evaluates on (`splits`), from the embedded sets (`embedded`) or the real
datasets (`real`), the training batches (`batches`) and the frozen vision tower's features on disk
(`feature_cache`)."""
