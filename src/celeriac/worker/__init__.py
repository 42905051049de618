"""The worker: consumer loop, task execution and pools."""
