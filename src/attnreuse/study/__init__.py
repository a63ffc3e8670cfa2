"""Accuracy study: every attention plan over seeds against mha, and retrofit recovery."""
