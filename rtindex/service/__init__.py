"""What runs as a process: the gRPC server, its settings, the CLI and the demo."""
