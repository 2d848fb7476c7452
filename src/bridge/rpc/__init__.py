"""The gRPC face of the bridge: thin grpclib handlers over the session registry."""
