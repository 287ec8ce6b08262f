"""The parts of `python -m immutable.compose`: settings, images, env file and the stack itself.

Imported inside the containers too (immutable.compose.worker_hostname): keep the top-level imports
of these modules to the standard library and immutable.config / immutable.paths."""
