"""Test helpers importable from tests and from spawned DDP processes (``tests.helpers``)."""
