"""What is measured on a trained model: curvature, sensitivity, sharpness, interpolation, weight paths and PCA.

Each measure is computed on weights and data it is handed, in eval mode, and
knows nothing about training or tracking.
"""
