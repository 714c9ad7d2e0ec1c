"""cnn_zoo: classic convolutional networks in JAX/Flax, trained and compared through one step."""
