"""Verbs the training subtree adds to ``depth-perception`` (entry point group
``depth_perception.commands``)."""
