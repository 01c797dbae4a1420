"""What every process of the stack runs on: the worker entry point, logging, the status channel."""
