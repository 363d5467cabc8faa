"""Generation engine: models, samplers, conditioning, sweeps and generation jobs."""
