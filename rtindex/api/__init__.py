"""What a remote caller needs: the gRPC client, the wire tensor codec and the generated
code (``v1``). Light: importing it loads no engine, kernels, numba or TensorFlow."""
