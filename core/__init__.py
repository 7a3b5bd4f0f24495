"""Shared foundation: datasets and captions, configuration, checkpoints, training utilities, image
I/O.

Imports none of minidiff/, minigan/ or eval/; they all import it.
"""
