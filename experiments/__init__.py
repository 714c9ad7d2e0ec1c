"""Thin absl launchers over cnn_zoo; each parses flags and calls one library function."""

import os

# TensorFlow only feeds the input pipeline: keep its start-up chatter off the console.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# Its oneDNN kernels only speed up the pipeline's few float ops, and announce themselves on every
# start despite the log level.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
