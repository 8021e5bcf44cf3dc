"""Training: run configs, stages, optimizer, checkpoints, the loop; ``parallelize.py`` is the only file
that knows FSDP. Model code never imports from here."""
