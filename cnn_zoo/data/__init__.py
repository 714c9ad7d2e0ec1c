"""Data: sources (TFDS, npz, image folders, the embedded digits) and the batch pipeline."""
