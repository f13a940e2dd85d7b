"""mnist_demo: draw, classify and train MNIST models."""
